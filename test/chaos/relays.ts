/**
 * Per-process loopback relays: each operator replica (and each `kubelock run` holder) reaches the API
 * server and every backend server member through TCP relays of its own (test/support/tcp-proxy.ts), so
 * the nemesis can partition ONE process from ONE server while every other process still reaches it.
 * A partition blackholes the relays: connections stay open, bytes stop (a half-open connection).
 */
import { writeFileSync } from "node:fs";
import * as k8s from "@kubernetes/client-node";
import { TcpProxy } from "../support/tcp-proxy";

/** The servers a process talks to: the API server and the lock backends. */
export type Upstream = "apiserver" | "redis" | "etcd" | "zookeeper" | "postgresql";

/** Where the servers really are (what the relays forward to). */
export interface Upstreams {
  /** https://127.0.0.1:PORT. */
  apiserver: string;
  /** redis://127.0.0.1:PORT. */
  redis?: string;
  /** Client URLs, http://127.0.0.1:PORT each. */
  etcd?: string[];
  /** host:port of each member. */
  zookeeper?: string[];
  /** postgres://USER@127.0.0.1:PORT/DB. */
  postgresql?: string;
}

export class Relays {
  private readonly proxies = new Map<Upstream, TcpProxy[]>();
  /** The relayed addresses, in the forms of `Upstreams`. */
  readonly addresses: Upstreams = { apiserver: "" };

  private constructor(private readonly upstreams: Upstreams) {}

  /** Starts one relay per server (per member of a cluster). */
  static async start(upstreams: Upstreams, only?: readonly Upstream[]): Promise<Relays> {
    const relays = new Relays(upstreams);
    try {
      await relays.open(only);
    } catch (err) {
      await relays.stop();
      throw err;
    }
    return relays;
  }

  private async open(only?: readonly Upstream[]): Promise<void> {
    const u = this.upstreams;
    const want = (name: Upstream) => !only || only.includes(name);
    if (want("apiserver")) this.addresses.apiserver = (await this.relay("apiserver", [u.apiserver]))[0];
    if (u.redis && want("redis")) this.addresses.redis = (await this.relay("redis", [u.redis]))[0];
    if (u.etcd && want("etcd")) this.addresses.etcd = await this.relay("etcd", u.etcd);
    if (u.zookeeper && want("zookeeper")) this.addresses.zookeeper = await this.relay("zookeeper", u.zookeeper);
    if (u.postgresql && want("postgresql")) this.addresses.postgresql = (await this.relay("postgresql", [u.postgresql]))[0];
  }

  /** Relays each address (a URL or host:port); returns the same addresses pointing at the relays. */
  private async relay(name: Upstream, targets: string[]): Promise<string[]> {
    const out: string[] = [];
    const proxies: TcpProxy[] = [];
    this.proxies.set(name, proxies);
    for (const target of targets) {
      const url = new URL(target.includes("://") ? target : `tcp://${target}`);
      const proxy = new TcpProxy(url.hostname, Number(url.port));
      proxies.push(proxy);
      await proxy.start();
      url.host = proxy.address;
      out.push(target.includes("://") ? url.toString().replace(/\/$/, "") : proxy.address);
    }
    return out;
  }

  /** Stops relaying to `name` (every member), keeping connections open. */
  blackhole(name: Upstream): void {
    const proxies = this.proxies.get(name);
    if (!proxies) throw new Error(`no relay to ${name}`);
    for (const p of proxies) p.partition();
  }

  restore(name: Upstream): void {
    for (const p of this.proxies.get(name) ?? []) p.heal();
  }

  /** The servers currently cut off. */
  get blackholed(): Upstream[] {
    return [...this.proxies].filter(([, ps]) => ps.some((p) => p.isPartitioned)).map(([name]) => name);
  }

  async stop(): Promise<void> {
    await Promise.all([...this.proxies.values()].flat().map((p) => p.stop()));
  }

  /** Writes a copy of `kubeconfig` whose cluster server is the API server relay. */
  writeKubeconfig(kubeconfig: string, file: string): string {
    const kc = new k8s.KubeConfig();
    kc.loadFromFile(kubeconfig);
    const current = kc.getCurrentCluster();
    if (!current) throw new Error(`${kubeconfig} has no current cluster`);
    const clusters = kc.clusters.map((c) => (c.name === current.name ? { ...c, server: this.addresses.apiserver } : c));
    kc.loadFromOptions({ clusters, users: kc.users, contexts: kc.contexts, currentContext: kc.currentContext });
    writeFileSync(file, kc.exportConfig());
    return file;
  }
}

/** The API server address of a kubeconfig (its current cluster's). */
export function apiServerOf(kubeconfig: string): string {
  const kc = new k8s.KubeConfig();
  kc.loadFromFile(kubeconfig);
  const server = kc.getCurrentCluster()?.server;
  if (!server) throw new Error(`${kubeconfig} has no current cluster`);
  return server;
}
