/**
 * A real local control plane, in the spirit of controller-runtime's envtest: etcd, kube-apiserver and
 * kube-controller-manager (garbage collector and namespace controllers) built from Go modules by
 * `hack/controlplane/build.sh`, on free loopback ports, with generated certificates and RBAC.
 */
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { request } from "node:https";
import { request as httpRequest } from "node:http";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { makeCerts } from "./certs";
import { launchHere, type Launcher, type NetworkNamespace } from "./netns";
import { freePort, type ManagedProcess } from "./process";

const repoRoot = resolve(__dirname, "..", "..");

/**
 * The directory with kube-apiserver, etcd, kube-controller-manager and kubectl (and with `node`, kubelet,
 * kube-scheduler and kube-proxy): `KUBEBUILDER_ASSETS` when set, else built once by
 * hack/controlplane/build.sh and cached (its progress shows on stderr).
 */
export function controlPlaneBinaries(options: { node?: boolean } = {}): Promise<string> {
  return new Promise((resolveDir, reject) => {
    const build = spawn(join(repoRoot, "hack/controlplane/build.sh"), options.node ? ["--node"] : [], { stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    build.stdout.on("data", (d) => (out += d));
    build.on("error", reject);
    build.on("close", (code) => {
      const dir = out.trim();
      if (code !== 0) return reject(new Error(`hack/controlplane/build.sh exited ${code}`));
      for (const bin of ["kube-apiserver", "etcd"]) {
        if (!existsSync(join(dir, bin))) return reject(new Error(`${dir} has no ${bin}`));
      }
      resolveDir(dir);
    });
  });
}

/** One etcd member on loopback: its name (also its data and log file names) and its ports. */
export interface EtcdMember {
  name: string;
  client: number;
  peer: number;
}

export const etcdEndpoint = (member: EtcdMember): string => `http://127.0.0.1:${member.client}`;

/**
 * Spawns `member` of the etcd cluster `cluster` (every member, itself included; alone by default) with its
 * data in `dir`, without waiting: members of a cluster only become healthy together. On a restart the data
 * directory exists and etcd ignores the initial-cluster flags, rejoining as the member it was.
 */
export function launchEtcd(binDir: string, dir: string, member: EtcdMember, cluster: EtcdMember[] = [member],
  logFile = join(dir, `${member.name}.log`), launch: Launcher = launchHere): ManagedProcess {
  const peerUrl = (m: EtcdMember) => `http://127.0.0.1:${m.peer}`;
  return launch(member.name, join(binDir, "etcd"), [
    `--name=${member.name}`,
    `--data-dir=${join(dir, `${member.name}-data`)}`,
    `--listen-client-urls=${etcdEndpoint(member)}`,
    `--advertise-client-urls=${etcdEndpoint(member)}`,
    `--listen-peer-urls=${peerUrl(member)}`,
    `--initial-advertise-peer-urls=${peerUrl(member)}`,
    `--initial-cluster=${cluster.map((m) => `${m.name}=${peerUrl(m)}`).join(",")}`,
    "--initial-cluster-state=new",
    "--unsafe-no-fsync=true",
    "--log-level=warn",
  ], logFile);
}

/** etcd's /health answers 200 only while the member sees a leader: in a cluster, once it is part of a quorum. */
export const etcdHealthy = (member: EtcdMember): Promise<boolean> => httpOk(`${etcdEndpoint(member)}/health`);

/**
 * A lone etcd server on free loopback ports with its data in `dir`, once healthy; inside `netns` when
 * given (its client port exposed on the machine's loopback).
 */
export async function startEtcd(binDir: string, dir: string, name = "etcd", netns?: NetworkNamespace): Promise<{ process: ManagedProcess; endpoint: string }> {
  const member: EtcdMember = { name, client: await freePort(), peer: await freePort() };
  if (netns) await netns.expose(member.client);
  const proc = launchEtcd(binDir, dir, member, [member], undefined, netns?.launch);
  await proc.waitUntil("etcd /health", () => etcdHealthy(member), 30_000);
  return { process: proc, endpoint: etcdEndpoint(member) };
}

export interface ControlPlane {
  kubeconfig: string;
  server: string;
  /** The CA that signed the API server's certificate and its client certificates (admin, kubelet client). */
  caCert: string;
  stop(): Promise<void>;
  /**
   * Stops kube-apiserver (SIGTERM) and starts it again on the same port, certificates and etcd data;
   * resolves once it is ready again. Clients see their connections and watches end, as in an upgrade.
   * `downMs`: how long to stay stopped before starting again (default 0).
   */
  restartApiServer(downMs?: number): Promise<void>;
}

export interface ControlPlaneOptions {
  name?: string;
  /** Start kube-controller-manager (default true). */
  controllerManager?: boolean;
  /**
   * Run for a real node: every process inside this namespace, the API server's port exposed on the
   * machine's loopback (same port, so one kubeconfig serves both sides). The API server then advertises
   * the namespace's address as the `kubernetes` Service's endpoint (which pods reach through kube-proxy,
   * and its certificate names), authorizes kubelets (Node), reaches them by InternalIP, and gives pods
   * ServiceAccount tokens; the controller manager also runs the controllers a node's pods need.
   */
  netns?: NetworkNamespace;
}

/** The `kubernetes` Service's ClusterIP: the first address of --service-cluster-ip-range. */
export const kubernetesServiceIp = "10.0.0.1";

/**
 * Starts etcd, kube-apiserver and (when `controllerManager`) kube-controller-manager in a fresh
 * temporary directory, waits until the API server is ready and `default` exists, writes a kubeconfig.
 * `stop()` stops every process and removes the directory.
 */
export async function startControlPlane(binDir: string, options: ControlPlaneOptions = {}): Promise<ControlPlane> {
  const name = options.name ?? "cluster";
  const netns = options.netns;
  const launch = netns?.launch ?? launchHere;
  const dir = mkdtempSync(join(tmpdir(), `kubelock-${name}-`));
  const processes: ManagedProcess[] = [];
  const stop = async () => {
    for (const p of processes.reverse()) await p.stop();
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const certs = await makeCerts(dir, netns ? [`IP:${netns.address}`, `IP:${kubernetesServiceIp}`, "DNS:kubernetes",
      "DNS:kubernetes.default", "DNS:kubernetes.default.svc", "DNS:kubernetes.default.svc.cluster.local"] : []);
    const etcd = await startEtcd(binDir, dir, "etcd", netns);
    processes.push(etcd.process);

    const port = await freePort();
    const server = `https://127.0.0.1:${port}`;
    if (netns) await netns.expose(port);
    const apiserverArgs = [
      `--etcd-servers=${etcd.endpoint}`,
      `--bind-address=${netns ? "0.0.0.0" : "127.0.0.1"}`,
      `--secure-port=${port}`,
      `--cert-dir=${dir}`,
      `--tls-cert-file=${certs.servingCert}`,
      `--tls-private-key-file=${certs.servingKey}`,
      `--client-ca-file=${certs.caCert}`,
      `--service-account-issuer=${server}/`,
      `--service-account-key-file=${certs.serviceAccountPub}`,
      `--service-account-signing-key-file=${certs.serviceAccountKey}`,
      "--service-cluster-ip-range=10.0.0.0/24",
      "--allow-privileged=true",
      "--v=0",
      ...(netns ? [
        `--advertise-address=${netns.address}`,
        "--authorization-mode=Node,RBAC",
        `--kubelet-client-certificate=${certs.adminCert}`,
        `--kubelet-client-key=${certs.adminKey}`,
        "--kubelet-preferred-address-types=InternalIP",
      ] : ["--authorization-mode=RBAC", "--disable-admission-plugins=ServiceAccount", "--endpoint-reconciler-type=none"]),
    ];
    let apiserver = launch(`${name}/kube-apiserver`, join(binDir, "kube-apiserver"), apiserverArgs, join(dir, "kube-apiserver.log"));
    processes.push(apiserver);
    const ca = readFileSync(certs.caCert);
    const adminCert = readFileSync(certs.adminCert);
    const adminKey = readFileSync(certs.adminKey);
    const tls = { ca, cert: adminCert, key: adminKey };
    await apiserver.waitUntil("/readyz", () => httpsOk(`${server}/readyz`, tls), 120_000);
    await apiserver.waitUntil("namespace default", () => httpsOk(`${server}/api/v1/namespaces/default`, tls), 60_000);
    let restarts = 0;
    const restartApiServer = async (downMs = 0) => {
      const old = apiserver;
      await old.stop();
      if (downMs > 0) await new Promise((resolve) => setTimeout(resolve, downMs));
      // Each run logs to its own file (a ManagedProcess truncates its log).
      apiserver = launch(`${name}/kube-apiserver`, join(binDir, "kube-apiserver"), apiserverArgs, join(dir, `kube-apiserver.restart-${++restarts}.log`));
      processes[processes.indexOf(old)] = apiserver;
      await apiserver.waitUntil("/readyz", () => httpsOk(`${server}/readyz`, tls), 120_000);
    };

    const kubeconfig = join(dir, "kubeconfig");
    writeFileSync(kubeconfig, kubeconfigYaml(name, server, certs.caCert, certs.adminCert, certs.adminKey));

    if (options.controllerManager !== false && existsSync(join(binDir, "kube-controller-manager"))) {
      const nodeControllers = ["serviceaccount-controller", "root-ca-certificate-publisher-controller", "endpointslice-controller",
        "node-lifecycle-controller", "pod-garbage-collector-controller"];
      const kcm = launch(`${name}/kube-controller-manager`, join(binDir, "kube-controller-manager"), [
        `--kubeconfig=${kubeconfig}`,
        `--authentication-kubeconfig=${kubeconfig}`,
        `--authorization-kubeconfig=${kubeconfig}`,
        "--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics",
        "--bind-address=127.0.0.1",
        `--secure-port=${await freePort()}`,
        `--cert-dir=${dir}`,
        `--controllers=${["garbagecollector", "namespace", "deployment", "replicaset", "job", ...(netns ? nodeControllers : [])].join(",")}`,
        ...(netns ? [`--root-ca-file=${certs.caCert}`, `--service-account-private-key-file=${certs.serviceAccountKey}`] : []),
        "--leader-elect=false",
        "--kube-api-qps=200",
        "--kube-api-burst=400",
        "--concurrent-gc-syncs=5",
        "--v=0",
      ], join(dir, "kube-controller-manager.log"));
      processes.push(kcm);
    }
    return { kubeconfig, server, caCert: certs.caCert, stop, restartApiServer };
  } catch (err) {
    await stop();
    throw err;
  }
}

function kubeconfigYaml(name: string, server: string, ca: string, cert: string, key: string): string {
  return `apiVersion: v1
kind: Config
clusters:
- name: ${name}
  cluster:
    server: ${server}
    certificate-authority: ${ca}
users:
- name: admin
  user:
    client-certificate: ${cert}
    client-key: ${key}
contexts:
- name: ${name}
  context: { cluster: ${name}, user: admin, namespace: default }
current-context: ${name}
`;
}

function httpsOk(url: string, tls: { ca: Buffer; cert: Buffer; key: Buffer }): Promise<boolean> {
  return new Promise((resolve) => {
    const req = request(url, { ...tls, timeout: 2000 }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.on("error", () => resolve(false));
    req.on("timeout", () => req.destroy());
    req.end();
  });
}

function httpOk(url: string): Promise<boolean> {
  return new Promise((resolve) => {
    const req = httpRequest(url, { timeout: 2000 }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.on("error", () => resolve(false));
    req.on("timeout", () => req.destroy());
    req.end();
  });
}
