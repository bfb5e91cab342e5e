/**
 * A real node for the end-to-end tier: Debian's containerd and runc, a CNI bridge, the kubelet,
 * kube-proxy and kube-scheduler (built with the control plane by hack/controlplane/build.sh --node),
 * all inside a network namespace of the environment's, running pods from images made without a registry
 * (hack/node/images.sh) and imported into containerd. Nodes of several clusters (each in a namespace of
 * its own, with its own directory, cgroup root and name) may run at once; they stop in reverse order of
 * their start, since each restores the kernel settings it found at its start.
 *
 * What it changes on the machine is undone by `stop()`: pods are deleted through the API and their
 * containers stopped, leftovers killed through containerd, every mount under the node's directory
 * unmounted, its cgroups removed, the links the kubelet made in /var/log/containers removed, and the
 * kernel settings the kubelet sets at start (vm.overcommit_memory, kernel.panic, ...: it has no option
 * not to) restored. Addresses, routes and iptables rules all live in
 * the namespace, which the environment deletes after the control plane stops.
 */
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmdirSync, rmSync, unlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import type { ControlPlane } from "./controlplane";
import type { NetworkNamespace } from "./netns";
import { cniConfig, containerdConfig, kubeletConfig, kubeProxyConfig, nodePaths } from "./node-config";
import { ManagedProcess, runCommand } from "./process";

const repoRoot = resolve(__dirname, "..", "..");

export interface NodeImages {
  /** The pod sandbox image (containerd's sandbox_image). */
  pause: string;
  /** The project's image, built from its Dockerfile: localhost/kubelock:SOURCES_HASH. */
  project: string;
  /** Every image as a docker archive to import. */
  archives: { name: string; file: string }[];
}

/** Builds (or takes from the cache) the node's images with hack/node/images.sh; its progress shows on stderr. */
export function nodeImages(): Promise<NodeImages> {
  return new Promise((done, reject) => {
    const build = spawn(join(repoRoot, "hack/node/images.sh"), [], { stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    build.stdout.on("data", (d) => (out += d));
    build.on("error", reject);
    build.on("close", (code) => {
      if (code !== 0) return reject(new Error(`hack/node/images.sh exited ${code}`));
      const archives = out.trim().split("\n").map((line) => {
        const [name, file] = line.split(" ");
        return { name, file };
      });
      const find = (prefix: string) => archives.find((a) => a.name.startsWith(prefix))?.name;
      const pause = find("localhost/kubelock-pause:");
      const project = find("localhost/kubelock:");
      if (!pause || !project) return reject(new Error(`hack/node/images.sh printed no pause or project image:\n${out}`));
      done({ pause, project, archives });
    });
  });
}

export interface RealNode {
  /** The Node's name. */
  name: string;
  stop(): Promise<void>;
}

/**
 * The kernel settings the kubelet changes machine-wide on start (with no opt-out), saved before and
 * restored at stop.
 */
const kubeletSysctls = ["vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
  "kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes"];

/**
 * Starts containerd, the kubelet, kube-proxy and kube-scheduler in `netns` for `plane` as the Node `nodeName`;
 * resolves once the node is Ready. Its log lines start with "node NAME:".
 */
export async function startNode(binDir: string, plane: ControlPlane, netns: NetworkNamespace, images: NodeImages,
  log: (line: string) => void, nodeName = "kubelock-node"): Promise<RealNode> {
  const say = (line: string) => log(`node ${nodeName}: ${line}`);
  for (const tool of ["containerd", "runc", "ctr", "socat", "iptables"]) {
    await runCommand("sh", ["-c", `command -v ${tool}`]).catch(() => {
      throw new Error(`${tool} is missing: the end-to-end tier installs its packages with hack/node/deps.sh (make e2e)`);
    });
  }
  const dir = mkdtempSync(join(tmpdir(), "kubelock-node-"));
  const paths = nodePaths(dir);
  const processes: ManagedProcess[] = [];
  const sysctls = new Map(kubeletSysctls.map((key) => [key, readFileSync(`/proc/sys/${key}`, "utf8").trim()]));
  const logLinksDirExisted = existsSync(containerLogLinks);
  const cgroupRoot = `/${dir.split("/").pop()}`;
  const cgroupDirs = cgroupMounts().map((mount) => join(mount, cgroupRoot));
  const ctr = (args: string[]) => runCommand("ctr", ["--address", paths.containerdSocket, "--namespace", "k8s.io", ...args]);
  const kubectl = (args: string[]) => runCommand(join(binDir, "kubectl"), ["--kubeconfig", plane.kubeconfig, ...args]);

  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    const kubelet = processes.find((p) => p.name === "kubelet");
    const others = processes.filter((p) => p !== kubelet && p.name !== "containerd");
    for (const p of others) await p.stop(); // the scheduler first: nothing new lands on the node
    if (kubelet?.running) await drain(kubectl, ctr, say);
    await kubelet?.stop(10_000);
    await killLeftovers(ctr, say);
    await processes.find((p) => p.name === "containerd")?.stop(10_000);
    await unmountUnder(dir, say);
    for (const cgroup of cgroupDirs) removeCgroup(cgroup, say);
    for (const [key, value] of sysctls) {
      if (readFileSync(`/proc/sys/${key}`, "utf8").trim() !== value) writeFileSync(`/proc/sys/${key}`, value);
    }
    removeLogLinks(dir, !logLinksDirExisted);
    rmSync(dir, { recursive: true, force: true });
  };

  try {
    for (const cgroup of cgroupDirs) {
      mkdirSync(cgroup, { recursive: true });
      for (const file of ["cpuset.cpus", "cpuset.mems"]) {
        const parent = join(cgroup, "..", file);
        if (existsSync(parent)) writeFileSync(join(cgroup, file), readFileSync(parent));
      }
    }
    mkdirSync(paths.cniConfDir, { recursive: true });
    writeFileSync(join(paths.cniConfDir, "10-kubelock.conflist"), cniConfig(paths));
    const file = (name: string, text: string) => {
      writeFileSync(join(dir, name), text);
      return join(dir, name);
    };

    const started = Date.now();
    const containerd = netns.launch("containerd", "containerd", ["--config", file("containerd.toml", containerdConfig(paths, images.pause))],
      join(dir, "containerd.log"));
    processes.push(containerd);
    await containerd.waitUntil("its socket", async () => existsSync(paths.containerdSocket) && (await ctr(["version"]), true), 30_000);
    for (const image of images.archives) await ctr(["images", "import", image.file]);
    say(`containerd ready with ${images.archives.length} images in ${((Date.now() - started) / 1000).toFixed(1)}s`);

    const resolvConf = file("resolv.conf", "nameserver 127.0.0.1\n");
    const kubelet = netns.launch("kubelet", join(binDir, "kubelet"), [
      `--config=${file("kubelet.json", kubeletConfig(paths, { clientCaFile: plane.caCert, cgroupRoot, resolvConf }))}`,
      `--kubeconfig=${plane.kubeconfig}`,
      `--root-dir=${join(dir, "kubelet")}`,
      `--cert-dir=${join(dir, "kubelet-pki")}`,
      `--hostname-override=${nodeName}`,
      `--node-ip=${netns.address}`,
      "--v=1",
    ], join(dir, "kubelet.log"));
    processes.push(kubelet);
    processes.push(netns.launch("kube-proxy", join(binDir, "kube-proxy"), [
      `--config=${file("kube-proxy.json", kubeProxyConfig({ kubeconfig: plane.kubeconfig, nodeName }))}`,
    ], join(dir, "kube-proxy.log")));
    processes.push(netns.launch("kube-scheduler", join(binDir, "kube-scheduler"), [
      `--kubeconfig=${plane.kubeconfig}`, `--authentication-kubeconfig=${plane.kubeconfig}`, `--authorization-kubeconfig=${plane.kubeconfig}`,
      "--leader-elect=false", "--bind-address=127.0.0.1",
    ], join(dir, "kube-scheduler.log")));
    await kubelet.waitUntil(`node ${nodeName} Ready`, async () => {
      const ready = await kubectl(["get", "node", nodeName, "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}"]);
      return ready.trim() === "True";
    }, 120_000);
    for (const p of processes) if (!p.running) throw new Error(`${p.name} exited:\n${p.tail()}`);
    say(`Ready in ${((Date.now() - started) / 1000).toFixed(1)}s (logs in ${dir})`);
    return { name: nodeName, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

/**
 * Where the kubelet links each container's log (a fixed path, with no option): links into the node's
 * directory that it had no time to remove are removed at stop.
 */
const containerLogLinks = "/var/log/containers";

/** Removes the links into `dir` from the kubelet's log link directory, and the directory if `created` and empty. */
function removeLogLinks(dir: string, created: boolean) {
  if (!existsSync(containerLogLinks)) return;
  for (const name of readdirSync(containerLogLinks)) {
    const link = join(containerLogLinks, name);
    try {
      if (readlinkSync(link).startsWith(`${dir}/`)) unlinkSync(link);
    } catch {
      // not a link, or gone already
    }
  }
  if (created && readdirSync(containerLogLinks).length === 0) rmdirSync(containerLogLinks);
}

/** The machine's cgroup hierarchies, v1 and v2 (the kubelet and runc use cgroupfs in each they find). */
function cgroupMounts(): string[] {
  return readFileSync("/proc/self/mounts", "utf8").split("\n")
    .map((line) => line.split(" "))
    .filter((fields) => fields[2] === "cgroup" || fields[2] === "cgroup2")
    .map((fields) => fields[1]);
}

/**
 * Deletes every pod through the API and waits (up to a minute) until containerd runs no task: the
 * kubelet then has stopped every container and sandbox (network torn down, namespaces removed).
 */
async function drain(kubectl: (args: string[]) => Promise<string>, ctr: (args: string[]) => Promise<string>, log: (line: string) => void) {
  const started = Date.now();
  await kubectl(["delete", "pods", "--all", "--all-namespaces", "--grace-period=2", "--wait=false"]).catch((err) => log(`${err}`));
  let tasks = "";
  while (Date.now() < started + 60_000) {
    tasks = (await ctr(["tasks", "ls", "-q"]).catch(() => "")).trim();
    if (tasks === "") {
      log(`every pod stopped ${((Date.now() - started) / 1000).toFixed(1)}s after their deletion`);
      return;
    }
    await new Promise((r) => setTimeout(r, 500));
  }
  log(`containers still ran a minute after their pods were deleted; killing them: ${tasks.split("\n").join(" ")}`);
}

/** Kills and deletes, through containerd, any task and container the kubelet left. */
async function killLeftovers(ctr: (args: string[]) => Promise<string>, log: (line: string) => void) {
  const tasks = (await ctr(["tasks", "ls", "-q"]).catch(() => "")).split("\n").filter(Boolean);
  for (const id of tasks) {
    await ctr(["tasks", "kill", "--signal", "SIGKILL", id]).catch(() => undefined);
    await ctr(["tasks", "delete", "--force", id]).catch((err) => log(`task ${id}: ${err}`));
  }
  const containers = (await ctr(["containers", "ls", "-q"]).catch(() => "")).split("\n").filter(Boolean);
  for (const id of containers) await ctr(["containers", "delete", id]).catch(() => undefined);
}

/** Unmounts every mount under `dir` (volumes, rootfs overlays, pod network namespaces), deepest first. */
async function unmountUnder(dir: string, log: (line: string) => void) {
  const targets = readFileSync("/proc/self/mountinfo", "utf8").split("\n")
    .map((line) => line.split(" ")[4])
    .filter((target) => target?.startsWith(`${dir}/`))
    .sort((a, b) => b.length - a.length);
  for (const target of new Set(targets)) {
    await runCommand("umount", [target]).catch(() => runCommand("umount", ["-l", target])).catch((err) => log(`${err}`));
  }
}

/** Removes a cgroup and every cgroup below it, deepest first (their processes are gone). */
function removeCgroup(cgroup: string, log: (line: string) => void) {
  if (!existsSync(cgroup)) return;
  for (const entry of readdirSync(cgroup, { withFileTypes: true })) {
    if (entry.isDirectory()) removeCgroup(join(cgroup, entry.name), log);
  }
  try {
    rmdirSync(cgroup);
  } catch (err) {
    log(`cgroup ${cgroup}: ${(err as Error).message}`);
  }
}
