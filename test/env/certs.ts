/**
 * Certificates and keys for a local kube-apiserver, made with the openssl command line: a CA, a serving
 * certificate for 127.0.0.1/localhost, an admin client certificate in `system:masters`, and the
 * service-account signing key pair.
 */
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
