/**
 * The configuration files of the test node's parts (see test/env/node.ts), each kept under the node's
 * directory so nothing lands in the machine's own paths (/etc, /var/lib, /opt, /var/log).
 */
import { join } from "node:path";

export interface NodePaths {
  /** The node's own directory: every state, socket and log path below is inside it. */
  dir: string;
  /** containerd's gRPC socket. */
  containerdSocket: string;
  /** The CNI configuration directory (containerd loads the bridge network from it). */
  cniConfDir: string;
}

export const nodePaths = (dir: string): NodePaths => ({
  dir,
  containerdSocket: join(dir, "containerd", "containerd.sock"),
  cniConfDir: join(dir, "cni", "net.d"),
});

/** The pod network: a bridge on the node, addresses from the node's own range. */
export const podSubnet = "10.244.0.0/24";

/**
 * containerd 1.6's CRI settings for this machine: runc with cgroupfs (no systemd), OOM score changes
 * restricted (root here lacks CAP_SYS_RESOURCE: without it every sandbox fails to start), no AppArmor,
 * the locally built pause image, and every path under the node's directory (pods' network namespaces
 * too, instead of /run/netns).
 */
export function containerdConfig(paths: NodePaths, pauseImage: string): string {
  const d = paths.dir;
  return `version = 2
root = "${join(d, "containerd", "root")}"
state = "${join(d, "containerd", "state")}"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]

[grpc]
  address = "${paths.containerdSocket}"

[plugins."io.containerd.internal.v1.opt"]
  path = "${join(d, "containerd", "opt")}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "${pauseImage}"
  restrict_oom_score_adj = true
  disable_apparmor = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "${join(d, "runc")}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "${paths.cniConfDir}"
`;
}

/** A bridge network with host-local addresses (their records under the node's directory) and port maps. */
export function cniConfig(paths: NodePaths): string {
  return JSON.stringify({
    cniVersion: "0.4.0",
    name: "kubelock",
    plugins: [
      {
        type: "bridge", bridge: "cni0", isGateway: true, ipMasq: true, hairpinMode: true,
        ipam: { type: "host-local", ranges: [[{ subnet: podSubnet }]], routes: [{ dst: "0.0.0.0/0" }], dataDir: join(paths.dir, "cni", "ipam") },
      },
      { type: "portmap", capabilities: { portMappings: true } },
    ],
  }, null, 2);
}

/**
 * The kubelet: cgroup v1 accepted (this machine's layout), cgroupfs under its own root, swap allowed,
 * x509 clients of the API server's CA (the API server's kubelet client certificate) allowed, no image
 * garbage collection or disk-pressure evictions (the images are imported, not pulled).
 */
export function kubeletConfig(paths: NodePaths, options: { clientCaFile: string; cgroupRoot: string; resolvConf: string }): string {
  return JSON.stringify({
    apiVersion: "kubelet.config.k8s.io/v1beta1",
    kind: "KubeletConfiguration",
    failCgroupV1: false,
    cgroupDriver: "cgroupfs",
    cgroupRoot: options.cgroupRoot,
    failSwapOn: false,
    containerRuntimeEndpoint: `unix://${paths.containerdSocket}`,
    podLogsDir: join(paths.dir, "pod-logs"),
    resolvConf: options.resolvConf,
    clusterDomain: "cluster.local",
    readOnlyPort: 0,
    authentication: { anonymous: { enabled: false }, webhook: { enabled: false }, x509: { clientCAFile: options.clientCaFile } },
    authorization: { mode: "AlwaysAllow" },
    imageGCHighThresholdPercent: 100,
    imageGCLowThresholdPercent: 99,
    evictionHard: { "memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%", "nodefs.inodesFree": "1%" },
    serializeImagePulls: false,
    fileCheckFrequency: "1s",
    syncFrequency: "5s",
  }, null, 2);
}

/**
 * kube-proxy in iptables mode inside the node's namespace: masquerading every Service connection (so
 * replies between pods on one bridge come back through it) and leaving the machine-wide conntrack
 * settings alone.
 */
export function kubeProxyConfig(options: { kubeconfig: string; nodeName: string }): string {
  return JSON.stringify({
    apiVersion: "kubeproxy.config.k8s.io/v1alpha1",
    kind: "KubeProxyConfiguration",
    clientConnection: { kubeconfig: options.kubeconfig },
    hostnameOverride: options.nodeName,
    mode: "iptables",
    iptables: { masqueradeAll: true },
    clusterCIDR: podSubnet,
    oomScoreAdj: 0,
    conntrack: { maxPerCore: 0, min: 0, tcpEstablishedTimeout: "0s", tcpCloseWaitTimeout: "0s" },
  }, null, 2);
}
