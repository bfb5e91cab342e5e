/**
 * What every fault of the nemesis shares: the kinds, the record of one injection, and what an injector
 * gets and gives back. One file per concern under faults/ injects its kinds (see nemesis.ts for the list).
 */
import type { CliHolder, SectionServer } from "../cli-holders";
import type { OperatorFleet } from "../operators";
import type { SentinelRedis } from "../../env/redis-setups";
import type { Random } from "../util";
import type { Counters } from "./data-loss";

export const FAULT_KINDS = [
  "kill-operator", "pause-operator", "roll-operators", "skew-clock", "partition-operator", "half-open-holder",
  "pause-backend", "restart-backend", "restart-apiserver", "lose-member", "lose-majority", "wipe-redis", "delete-counter",
  "shared-default-config", "failover-redis",
] as const;
export type FaultKind = (typeof FAULT_KINDS)[number];
/** The kinds that need a clustered backend server. */
export const CLUSTER_FAULT_KINDS: readonly FaultKind[] = ["lose-member", "lose-majority"];
/** The kinds that lose a backend's data: what they break is inherent to the backend (see checker.ts). */
export const DATA_LOSS_KINDS: readonly FaultKind[] = ["wipe-redis"];
export type ServerName = "redis" | "zookeeper" | "etcd" | "postgresql";
/** How `failover-redis` fails the Sentinel master: SIGKILL, or SIGSTOP until the replica is promoted. */
export type MasterFailure = Parameters<SentinelRedis["failMaster"]>[0];

export interface Fault {
  kind: FaultKind;
  /** What it hit: "c1/operator-N", a backend server's name, "SERVER/M,N" (its members M and N), "kube-apiserver", ... */
  target: string;
  /** The episode it belongs to (faults of one episode overlap). */
  episode: number;
  injectedAt: number;
  healedAt?: number;
  /** Why it could not be injected, if it was not. */
  skipped?: string;
}

/** A fault that went in: how long it lasts and how to undo it (every injector's fault is healable). */
export interface Injected {
  holdMs: number;
  heal: () => Promise<void>;
}

/** Undone at once, or already undone by the injection itself (a kill, a restart). */
export const instant = (): Injected => ({ holdMs: 0, heal: async () => undefined });

/** Everything an injector may use. */
export interface FaultContext {
  random: Random;
  /** The operator fleets, one per cluster; fleets[0] runs two replicas. */
  fleets: OperatorFleet[];
  /** Backend servers in use, those that keep their data across a restart, and the clustered ones with their size. */
  servers: ServerName[];
  restartable: ServerName[];
  clusters: Partial<Record<ServerName, number>>;
  /** The `kubelock run` holders and their section server, when the run has them. */
  holders?: { all: CliHolder[]; server: SectionServer };
  counters?: Counters;
  /** The Redis Sentinel setup of the `redis-sentinel` backend and the ways its master may fail, when the run uses it. */
  sentinel?: { setup: Pick<SentinelRedis, "failMaster">; failures: readonly MasterFailure[] };
  /** The locks' lease and the leader election lease, ms. */
  lockLeaseMs: number;
  leaderLeaseMs: number;
  /** POST to the environment's control endpoint. */
  post: (path: string, timeoutMs?: number) => Promise<void>;
  /**
   * Claims a shared resource for this episode ("operator", a server's name): false if another fault of
   * the episode has it, and then the injector returns undefined without recording anything.
   */
  take: (resource: string) => boolean;
  /** Records the fault (its target, or why it was skipped). */
  record: (target: string, skipped?: string) => void;
  log: (line: string) => void;
}

export type Injector = (ctx: FaultContext) => Promise<Injected | undefined>;

/** Longer than the lock's lease (holds expire) and than the leader lease (a follower takes over). */
export const longPause = (ctx: FaultContext): number => Math.max(ctx.lockLeaseMs, ctx.leaderLeaseMs) + ctx.random.int(1000, 2500);
