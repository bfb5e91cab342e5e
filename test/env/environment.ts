/**
 * Everything the integration tests and the demo run against, started once: one or two local control
 * planes (or the existing cluster of `KUBECONFIG` when `USE_EXISTING_CLUSTER=true`), the backend
 * servers, and the CRDs. `variables` tells child processes where everything is (see
 * test/support/env.ts); a loopback control endpoint lets tests stop and start backend servers (and
 * single members of clustered ones).
 */
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { controlPlaneBinaries, startControlPlane, type ControlPlane } from "./controlplane";
import { writeOperatorKubeconfig } from "./operator-identity";
import { NetworkNamespace } from "./netns";
import { nodeImages, startNode } from "./node";
import { runCommand } from "./process";
import { EtcdService, hasMembers, PostgresService, RedisService, ZooKeeperService, type Service } from "./services";

const repoRoot = resolve(__dirname, "..", "..");
export const crdsDir = join(repoRoot, "crds");

export type ServiceName = "redis" | "zookeeper" | "etcd" | "postgresql";

export interface EnvironmentOptions {
  /** Independent API servers to start (ignored with an existing cluster). Default 1. */
  clusters?: 1 | 2;
  services?: ServiceName[];
  log?: (line: string) => void;
  /** Start kube-controller-manager with each control plane (default true). */
  controllerManager?: boolean;
  /** Redis with an fsynced append-only file, so holds and fencing counters survive its restart (default false). */
  redisPersistence?: boolean;
  /**
   * etcd and ZooKeeper as 3-member clusters on loopback (default false: one server each). Their variables
   * then list every member, comma-separated: KUBELOCK_TEST_ETCD_ENDPOINT the client URLs (split it for
   * `etcd.endpoints`), KUBELOCK_TEST_ZOOKEEPER_CONNECT a host:port,host:port,host:port connect string.
   */
  clusteredBackends?: boolean;
  /**
   * A real node (test/env/node.ts) in a network namespace of its own, with one control plane inside the
   * same namespace (its API server exposed on the machine's loopback): pods run. Needs root, the packages
   * of hack/node/deps.sh, and builds the images first (hack/node/images.sh). Its variables:
   * KUBELOCK_TEST_IMAGE (the project's image), KUBELOCK_TEST_NODE (the Node's name),
   * KUBELOCK_TEST_NODE_NETNS (the namespace's path, for `nsenter --net=`), and with Redis,
   * KUBELOCK_TEST_NODE_REDIS_URL (the same server as pods reach it, through a relay at the node address).
   * With 2 clusters, cluster 2 gets a node of its own the same way, in a namespace of its own (node
   * address 10.251.0.1 where cluster 1's is 10.250.0.1), named kubelock-node-2; its variables are those
   * above suffixed _2 (KUBELOCK_TEST_NODE_2, KUBELOCK_TEST_NODE_NETNS_2, KUBELOCK_TEST_NODE_REDIS_URL_2),
   * the image being the same. Nodes stop in reverse order of their start.
   */
  node?: boolean;
}

export interface Environment {
  /**
   * Variables for child processes: KUBECONFIG (admin), KUBELOCK_TEST_OPERATOR_KUBECONFIG (the operator's
   * ServiceAccount, see operator-identity.ts), KUBELOCK_TEST_*.
   */
  variables: Record<string, string>;
  kubectl: string;
  binDir?: string;
  /** The member count of each clustered service (see `clusteredBackends`); the others are absent. */
  members: Partial<Record<ServiceName, number>>;
  stop(): Promise<void>;
}

export async function startEnvironment(options: EnvironmentOptions = {}): Promise<Environment> {
  const log = options.log ?? ((line: string) => console.error(line));
  const cleanups: (() => Promise<void>)[] = [];
  const stop = async () => {
    for (const cleanup of cleanups.reverse()) await cleanup().catch((err) => log(`cleanup: ${err}`));
    cleanups.length = 0;
  };
  try {
    const variables: Record<string, string> = {};
    const existing = process.env.USE_EXISTING_CLUSTER === "true";
    let binDir: string | undefined;
    const needEtcd = options.services?.includes("etcd");
    if (options.node && existing) throw new Error("a real node joins the local control plane only: unset USE_EXISTING_CLUSTER");
    if (options.node && process.getuid?.() !== 0) throw new Error("a real node needs root (network namespaces, mounts, cgroups)");
    if (!existing || needEtcd) binDir = await controlPlaneBinaries({ node: options.node });
    const images = options.node ? await nodeImages() : undefined;
    const kubectl = binDir && existsSync(join(binDir, "kubectl")) ? join(binDir, "kubectl") : "kubectl";
    variables.KUBELOCK_TEST_KUBECTL = kubectl;

    const kubeconfigs: string[] = [];
    const planes: ControlPlane[] = [];
    const namespaces: NetworkNamespace[] = [];
    if (existing) {
      const kubeconfig = process.env.KUBECONFIG;
      if (!kubeconfig) throw new Error("USE_EXISTING_CLUSTER=true needs KUBECONFIG");
      log(`environment: using the existing cluster of ${kubeconfig}`);
      kubeconfigs.push(kubeconfig);
    } else {
      for (let i = 1; i <= (options.clusters ?? 1); i++) {
        const netns = images ? await nodeNamespace(i, cleanups, log) : undefined;
        if (netns) namespaces.push(netns);
        log(`environment: starting control plane ${i} (etcd, kube-apiserver, kube-controller-manager)`);
        const started = Date.now();
        const plane: ControlPlane = await startControlPlane(binDir!, { name: `cluster${i}`, controllerManager: options.controllerManager, netns });
        cleanups.push(() => plane.stop());
        planes.push(plane);
        log(`environment: control plane ${i} ready at ${plane.server} in ${((Date.now() - started) / 1000).toFixed(1)}s`);
        kubeconfigs.push(plane.kubeconfig);
        if (!netns || !images) continue;
        // Started after its control plane, stopped before it (cleanups run in reverse): node 2 before node 1.
        const node = await startNode(binDir!, plane, netns, images, log, i === 1 ? "kubelock-node" : `kubelock-node-${i}`);
        cleanups.push(() => node.stop());
        Object.assign(variables, { KUBELOCK_TEST_IMAGE: images.project, [`KUBELOCK_TEST_NODE${suffix(i)}`]: node.name,
          [`KUBELOCK_TEST_NODE_NETNS${suffix(i)}`]: netns.path });
      }
    }
    variables.KUBECONFIG = kubeconfigs[0];
    if (kubeconfigs[1]) variables.KUBELOCK_TEST_KUBECONFIG_2 = kubeconfigs[1];
    for (const kubeconfig of kubeconfigs) await installCrds(kubectl, kubeconfig);
    log("environment: CRDs installed and established");
    // Operators under test authenticate as the shipped ServiceAccount of their cluster, never as admin.
    const identities = mkdtempSync(join(tmpdir(), "kubelock-operator-identity-"));
    cleanups.push(async () => rmSync(identities, { recursive: true, force: true }));
    for (const [i, kubeconfig] of kubeconfigs.entries()) {
      const file = join(identities, `cluster${i + 1}.kubeconfig`);
      await writeOperatorKubeconfig(kubectl, kubeconfig, file);
      variables[`KUBELOCK_TEST_OPERATOR_KUBECONFIG${suffix(i + 1)}`] = file;
    }
    log("environment: deploy/rbac.yaml applied; operators run with its ServiceAccount's token");

    const services = new Map<ServiceName, Service>();
    const members: Partial<Record<ServiceName, number>> = {};
    const clustered = options.clusteredBackends ?? false;
    for (const name of options.services ?? []) {
      const service = name === "redis" ? await RedisService.create({ persistent: options.redisPersistence })
        : name === "postgresql" ? await PostgresService.create()
        : name === "zookeeper" ? await (clustered ? ZooKeeperService.ensemble(3) : ZooKeeperService.create())
        : await (clustered ? EtcdService.cluster(binDir!, 3) : EtcdService.create(binDir!));
      cleanups.push(() => service.destroy());
      await service.start();
      services.set(name, service);
      if (hasMembers(service)) members[name] = service.members;
      log(`environment: ${name}${hasMembers(service) ? ` (${service.members} members)` : ""} at ${service.address}`);
    }
    const redis = services.get("redis");
    if (redis) variables.KUBELOCK_TEST_REDIS_URL = redis.address;
    for (const [i, netns] of redis ? namespaces.entries() : []) {
      variables[`KUBELOCK_TEST_NODE_REDIS_URL${suffix(i + 1)}`] = `redis://${await netns.reach(Number(new URL(redis!.address).port))}`;
    }
    if (services.has("zookeeper")) variables.KUBELOCK_TEST_ZOOKEEPER_CONNECT = services.get("zookeeper")!.address;
    if (services.has("etcd")) variables.KUBELOCK_TEST_ETCD_ENDPOINT = services.get("etcd")!.address;
    if (services.has("postgresql")) variables.KUBELOCK_TEST_POSTGRESQL_URL = services.get("postgresql")!.address;

    if (services.size > 0 || planes.length > 0) {
      const control = await serveControl(services, planes);
      cleanups.push(() => new Promise((done) => control.server.close(() => done())));
      variables.KUBELOCK_TEST_CONTROL = control.url;
    }
    return { variables, kubectl, binDir, members, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

/** The suffix of cluster `i`'s variables (1-based): none for the first, _2 for the second. */
const suffix = (i: number) => (i === 1 ? "" : `_${i}`);

/**
 * Cluster `i`'s network namespace for a real node (1-based): kubelock-PID for the first, kubelock-PID-I
 * for others, node address 10.(249+I).0.1, with a directory of its own for the relays' sockets and logs;
 * deleted (and the directory removed) by `cleanups`.
 */
async function nodeNamespace(i: number, cleanups: (() => Promise<void>)[], log: (line: string) => void): Promise<NetworkNamespace> {
  const dir = mkdtempSync(join(tmpdir(), "kubelock-netns-"));
  cleanups.push(async () => rmSync(dir, { recursive: true, force: true }));
  const netns = await NetworkNamespace.create(`kubelock-${process.pid}${i === 1 ? "" : `-${i}`}`, dir, `10.${249 + i}.0.1`);
  cleanups.push(() => netns.destroy());
  log(`environment: network namespace ${netns.name} (node address ${netns.address})`);
  return netns;
}

export async function installCrds(kubectl: string, kubeconfig: string): Promise<void> {
  await runCommand(kubectl, ["--kubeconfig", kubeconfig, "apply", "--server-side", "--force-conflicts", "-k", crdsDir]);
  await runCommand(kubectl, ["--kubeconfig", kubeconfig, "wait", "--for=condition=Established", "--timeout=60s",
    "crd/distributedlocks.kubelock.io", "crd/lockclaims.kubelock.io"]);
  // Established is not yet servable: the API server answers 429 "storage is (re)initializing" until the
  // new kinds' watch caches are ready. Clients start right after this, so wait until a list works.
  for (let attempt = 1; ; attempt++) {
    try {
      await runCommand(kubectl, ["--kubeconfig", kubeconfig, "get", "distributedlocks,lockclaims", "--all-namespaces"]);
      return;
    } catch (err) {
      if (attempt >= 60) throw err;
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
  }
}

/**
 * How test processes inject faults, on loopback:
 * - POST /services/NAME/stop|start: take a backend server away and bring it back (same address and data);
 * - POST /services/NAME/pause|resume: SIGSTOP / SIGCONT the server process (it hangs with connections open);
 *   on a clustered service these four act on every member;
 * - POST /services/redis/wipe: data loss, restart Redis empty (its data files deleted);
 * - POST /services/NAME/members/I/stop|start: stop or start one member (1-based) of a clustered service;
 *   start answers once the member serves again, if a majority of members runs (else once it is spawned).
 *   400 for a service without members, 404 for a member it does not have;
 * - POST /controlplanes/N/apiserver/restart: restart control plane N's kube-apiserver (1-based; same port,
 *   certificates and etcd data), answering once it is ready again. Absent with an existing cluster.
 */
function serveControl(services: Map<ServiceName, Service>, planes: ControlPlane[] = []): Promise<{ server: Server; url: string }> {
  const server = createServer((req, res) => {
    const plane = req.method === "POST" ? /^\/controlplanes\/(\d+)\/apiserver\/restart$/.exec(req.url ?? "") : null;
    if (plane) {
      const target = planes[Number(plane[1]) - 1];
      if (!target) {
        res.writeHead(404).end("unknown control plane\n");
        return;
      }
      target.restartApiServer().then(
        () => res.writeHead(200).end("ok\n"),
        (err: Error) => res.writeHead(500).end(`${err.message}\n`),
      );
      return;
    }
    const answer = (done: Promise<void>) => done.then(
      () => res.writeHead(200).end("ok\n"),
      (err: Error) => res.writeHead(500).end(`${err.message}\n`),
    );
    const match = /^\/services\/(\w+)\/(?:(stop|start|pause|resume|wipe)|members\/(\d+)\/(stop|start))$/.exec(req.url ?? "");
    const service = match && services.get(match[1] as ServiceName);
    if (req.method !== "POST" || !match || !service) {
      res.writeHead(404).end("unknown service or action\n");
      return;
    }
    if (match[2] === "wipe") {
      if (service instanceof RedisService) answer(service.wipe());
      else res.writeHead(400).end(`${match[1]} cannot be wiped (only redis)\n`);
      return;
    }
    if (match[2]) {
      answer(service[match[2] as "stop" | "start" | "pause" | "resume"]());
      return;
    }
    const member = Number(match[3]);
    if (!hasMembers(service)) {
      res.writeHead(400).end(`${match[1]} is a single server, without members\n`);
    } else if (member < 1 || member > service.members) {
      res.writeHead(404).end(`${match[1]} has members 1 to ${service.members}, not ${member}\n`);
    } else {
      answer(match[4] === "stop" ? service.stopMember(member) : service.startMember(member));
    }
  });
  return new Promise((done) =>
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      done({ server, url: `http://127.0.0.1:${typeof address === "object" && address ? address.port : 0}` });
    }),
  );
}
