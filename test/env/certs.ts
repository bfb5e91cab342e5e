/**
 * Certificates and keys for a local kube-apiserver, made with the openssl command line: a CA, a serving
 * certificate for 127.0.0.1/localhost, an admin client certificate in `system:masters`, and the
 * service-account signing key pair. Also the pieces the backends' TLS servers are made of (an EC CA, a
 * certificate it signs) and, for client certificate rotation, a client certificate from a new CA of its own.
 */
import { randomBytes } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { findLibfaketime, skewedClock } from "./faketime";
import { runCommand } from "./process";

export interface ControlPlaneCerts {
  caCert: string;
  servingCert: string;
  servingKey: string;
  adminCert: string;
  adminKey: string;
  serviceAccountKey: string;
  serviceAccountPub: string;
}

/**
 * Certificates start an hour in the past (kubeadm backdates by five minutes for the same reason), so a process
 * whose clock is behind (the clock-skew tests run operators under libfaketime) still accepts them: openssl runs
 * with its clock an hour behind when libfaketime is installed (hack/deps.sh installs it).
 */
const backdate = findLibfaketime() ? { ...process.env, ...skewedClock("-1h") } : undefined;
const openssl = (args: string[]) => runCommand("openssl", args, { env: backdate });

/** `extraSans`: more subjectAltName entries for the serving certificate (e.g. "IP:10.0.0.1", "DNS:kubernetes"). */
export async function makeCerts(dir: string, extraSans: string[] = []): Promise<ControlPlaneCerts> {
  const p = (name: string) => join(dir, name);
  const certs: ControlPlaneCerts = {
    caCert: p("ca.crt"),
    servingCert: p("serving.crt"),
    servingKey: p("serving.key"),
    adminCert: p("admin.crt"),
    adminKey: p("admin.key"),
    serviceAccountKey: p("sa.key"),
    serviceAccountPub: p("sa.pub"),
  };
  await openssl(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", p("ca.key"), "-out", certs.caCert,
    "-days", "2", "-subj", "/CN=kubelock-test-ca", "-addext", "basicConstraints=critical,CA:TRUE",
    "-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
  await issue("serving", "/CN=kube-apiserver", `subjectAltName=${["IP:127.0.0.1", "DNS:localhost", ...extraSans].join(",")}\nextendedKeyUsage=serverAuth\n`);
  await issue("admin", "/O=system:masters/CN=admin", "extendedKeyUsage=clientAuth\n");
  await openssl(["genrsa", "-out", certs.serviceAccountKey, "2048"]);
  await openssl(["rsa", "-in", certs.serviceAccountKey, "-pubout", "-out", certs.serviceAccountPub]);
  return certs;

  async function issue(name: string, subject: string, extensions: string) {
    writeFileSync(p(`${name}.ext`), extensions);
    await openssl(["req", "-newkey", "rsa:2048", "-nodes", "-keyout", p(`${name}.key`), "-out", p(`${name}.csr`), "-subj", subject]);
    await openssl(["x509", "-req", "-in", p(`${name}.csr`), "-CA", certs.caCert, "-CAkey", p("ca.key"), "-CAcreateserial",
      "-out", p(`${name}.crt`), "-days", "2", "-extfile", p(`${name}.ext`)]);
  }
}

const EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];

/** `<dir>/<name>.crt` and `.key`: a self-signed CA (EC P-256). */
export async function makeCa(dir: string, name: string): Promise<void> {
  await openssl(["req", "-x509", ...EC_KEY, "-keyout", join(dir, `${name}.key`), "-out", join(dir, `${name}.crt`), "-days", "2",
    "-subj", `/CN=kubelock-test-${name}`, "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
}

/** `<dir>/<name>.crt` and `.key`: a certificate for `subject` signed by the CA `<dir>/<ca>.crt` (EC P-256). */
export async function issue(dir: string, ca: string, name: string, subject: string, extensions: string): Promise<void> {
  const p = (file: string) => join(dir, file);
  writeFileSync(p(`${name}.ext`), extensions);
  await openssl(["req", ...EC_KEY, "-keyout", p(`${name}.key`), "-out", p(`${name}.csr`), "-subj", subject]);
  await openssl(["x509", "-req", "-in", p(`${name}.csr`), "-CA", p(`${ca}.crt`), "-CAkey", p(`${ca}.key`), "-CAcreateserial",
    "-out", p(`${name}.crt`), "-days", "2", "-extfile", p(`${name}.ext`)]);
}

/** A client certificate and key for `subject` from a new CA of its own (`issuerFile`: what a server must trust to accept it), in `dir`. */
export async function newClientCertificate(dir: string, subject: string): Promise<{ certFile: string; keyFile: string; issuerFile: string }> {
  const n = randomBytes(3).toString("hex");
  await makeCa(dir, `client-ca-${n}`);
  await issue(dir, `client-ca-${n}`, `client-${n}`, subject, "extendedKeyUsage=clientAuth\n");
  return { certFile: join(dir, `client-${n}.crt`), keyFile: join(dir, `client-${n}.key`), issuerFile: join(dir, `client-ca-${n}.crt`) };
}
