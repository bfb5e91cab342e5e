/**
 * The nemesis: injects faults in episodes, each fault alone or several mixed (overlapping, at random
 * offsets), heals them, then waits until every lock grants again (the recovery time) before the next
 * episode. The faults, one file per concern under faults/:
 *
 * - operators.ts   `kill-operator`, `pause-operator`, `roll-operators` (rolling replacement of both replicas),
 *                  `skew-clock` (replicas on a wall clock skewed by more than a lease);
 * - partition.ts   `partition-operator`: ONE operator cut off from ONE server (API server or a backend), its
 *                  connections left open;
 * - holder.ts      `half-open-holder`: a `kubelock run` holder's API connection half-open in its critical section;
 * - servers.ts     `pause-backend`, `restart-backend`, `restart-apiserver`, `lose-member`, `lose-majority`;
 * - data-loss.ts   `wipe-redis` (restarted empty), `delete-counter` (a Redis lock's fencing counter deleted; the
 *                  Lease backend has no counter since its tokens became resourceVersions, so no Lease lock is a target);
 * - shared.ts      `shared-default-config`: two clusters sharing the backends on the shipped default config;
 * - failover.ts    `failover-redis`: a Redis Sentinel failover (the master crashes or hangs; the replica is promoted).
 *
 * Whatever happens, every fault injected is healed (`healAll`), so no process is left stopped or cut off.
 */
import type { OperatorFleet } from "./operators";
import { deleteCounter, wipeRedis, type Counters } from "./faults/data-loss";
import { failoverRedis } from "./faults/failover";
import { halfOpenHolder } from "./faults/holder";
import { killOperator, pauseOperator, rollOperators, skewClock } from "./faults/operators";
import { partitionOperator } from "./faults/partition";
import { loseMajority, loseMember, pauseBackend, restartApiServer, restartBackend } from "./faults/servers";
import { sharedDefaultConfig } from "./faults/shared";
import type { Fault, FaultContext, FaultKind, Injected, Injector, ServerName } from "./faults/types";
import type { CliHolder, SectionServer } from "./cli-holders";
import { now, Random, sleep, withTimeout } from "./util";

export { CLUSTER_FAULT_KINDS, DATA_LOSS_KINDS, FAULT_KINDS, type Fault, type FaultKind, type ServerName } from "./faults/types";

/** The kinds that act on operators (one of them per episode). */
const OPERATOR_KINDS: readonly FaultKind[] = ["kill-operator", "pause-operator", "roll-operators", "skew-clock", "partition-operator", "shared-default-config"];

const INJECTORS: Record<FaultKind, Injector> = {
  "kill-operator": killOperator, "pause-operator": pauseOperator, "roll-operators": rollOperators, "skew-clock": skewClock,
  "partition-operator": partitionOperator, "half-open-holder": halfOpenHolder,
  "pause-backend": pauseBackend, "restart-backend": restartBackend, "restart-apiserver": restartApiServer,
  "lose-member": loseMember, "lose-majority": loseMajority, "wipe-redis": wipeRedis, "delete-counter": deleteCounter,
  "shared-default-config": sharedDefaultConfig, "failover-redis": failoverRedis,
};

export interface Recovery {
  episode: number;
  faults: string;
  /** When the last fault of the episode healed. */
  healedAt: number;
  /** Per lock: ms from healedAt to its next grant; undefined when none came in time. */
  byLock: Map<string, number | undefined>;
  /** The longest of byLock (Infinity if a lock never recovered). */
  longest: number;
}

export interface NemesisOptions {
  control: string;
  /** One fleet per cluster; the first has two replicas. */
  fleets: OperatorFleet[];
  holders?: { all: CliHolder[]; server: SectionServer };
  counters?: Counters;
  sentinel?: FaultContext["sentinel"];
  random: Random;
  /** Backend servers the run uses (faults pick among them). */
  servers: ServerName[];
  /** Servers that keep their data across a restart (restart-backend picks among them). */
  restartable: ServerName[];
  /** The clustered servers among `servers`, with their member count (lose-member and lose-majority pick among them). */
  clusters: Partial<Record<ServerName, number>>;
  kinds: readonly FaultKind[];
  /** The locks' leaseDurationSeconds, and the leader election lease, in ms: pauses outlast both. */
  lockLeaseMs: number;
  leaderLeaseMs: number;
  /** Inject each kind alone once (shuffled) before mixing. */
  aloneFirst: boolean;
  /** With aloneFirst: two kinds per episode instead, an operator fault with another kind, else two that need no operator (covers every kind sooner). */
  pairUp: boolean;
  /** Chance that an episode mixes 2–3 faults. */
  mixChance: number;
  /** Episodes mixing faults that must come (right after the alone ones) before the nemesis may finish. */
  mixedAtLeast: number;
  /** At most this many faults in a mixed episode (2 or more). */
  maxMix: number;
  /** Pause between episodes, ms. */
  gapMs: [number, number];
  /** How long a lock may take to grant again after an episode healed. */
  recoveryTimeoutMs: number;
  /** Time of the last grant observed on each lock (`now()` scale). */
  lastGrant: (lock: string) => number | undefined;
  locks: string[];
  /** True once the run wants no more episodes. */
  done: () => boolean;
  log: (line: string) => void;
}

/** One fault in progress: how to undo it. */
interface Active extends Injected {
  fault: Fault;
}

export class Nemesis {
  readonly faults: Fault[] = [];
  readonly recoveries: Recovery[] = [];
  private readonly active = new Set<Active>();
  private episode = 0;

  constructor(private readonly o: NemesisOptions) {}

  /**
   * Runs episodes until `done()` (bounded by a count as well), but not before each kind had its episode
   * alone (with `aloneFirst`); heals everything before returning.
   */
  async run(): Promise<void> {
    const o = this.o;
    const alone = o.aloneFirst ? o.random.shuffle(o.kinds) : [];
    let mixed = o.mixedAtLeast;
    const retries = new Map<FaultKind, number>();
    const finished = () => alone.length === 0 && mixed <= 0 && o.done();
    try {
      for (let n = 0; n < 10_000 && !finished(); n++) {
        await sleep(o.random.int(...o.gapMs));
        if (finished()) break;
        if (o.kinds.length === 0) {
          mixed = 0;
          continue; // a run without faults (a baseline): just wait for the end
        }
        const covering = alone.length > 0;
        const kinds = covering ? this.nextUncovered(alone) : this.pickMix(mixed > 0);
        // A required mixed episode counts only when two faults really went in (one can be skipped,
        // e.g. when both would hit the same process).
        const injected = await this.runEpisode(kinds);
        if (injected.length > 1) mixed--;
        // A kind that could not go in (no leader to hit, say) gets another turn, up to three in all.
        for (const kind of covering ? kinds.filter((k) => !injected.includes(k)) : []) {
          const tries = (retries.get(kind) ?? 0) + 1;
          retries.set(kind, tries);
          if (tries < 3) alone.push(kind);
        }
      }
    } finally {
      await this.healAll();
    }
  }

  /**
   * The next kinds (removed from `alone`): one, or with `pairUp` two: an operator fault with one that needs no
   * operator, or, once either sort is used up, two that need no operator (they take different servers).
   */
  private nextUncovered(alone: FaultKind[]): FaultKind[] {
    const first = alone.shift()!;
    if (!this.o.pairUp) return [first];
    const operator = OPERATOR_KINDS.includes(first);
    let partner = alone.findIndex((k) => OPERATOR_KINDS.includes(k) !== operator);
    if (partner < 0 && !operator) partner = alone.findIndex((k) => !OPERATOR_KINDS.includes(k));
    return partner < 0 ? [first] : [first, ...alone.splice(partner, 1)];
  }

  private pickMix(forceMix: boolean): FaultKind[] {
    const { random, kinds, mixChance } = this.o;
    if (!forceMix && random.next() >= mixChance) return [random.pick(kinds)];
    return random.shuffle(kinds).slice(0, random.int(2, Math.max(2, this.o.maxMix)));
  }

  /** Injects `kinds` (at random offsets), heals them, waits for recovery; returns the kinds that went in. */
  private async runEpisode(kinds: FaultKind[]): Promise<FaultKind[]> {
    const episode = ++this.episode;
    const used = new Set<string>();
    const started: Active[] = [];
    const begin = now();
    await Promise.all(kinds.map(async (kind, i) => {
      if (i > 0) await sleep(this.o.random.int(0, 2000)); // mixed faults start at random offsets
      let active: Active | undefined;
      try {
        active = await this.inject(kind, episode, used);
      } catch (err) {
        this.o.log(`nemesis: injecting ${kind} failed: ${(err as Error).message}`);
        const last = this.faults[this.faults.length - 1];
        if (last?.episode === episode && last.kind === kind) last.skipped = `injection failed: ${(err as Error).message}`;
        return;
      }
      if (!active) return;
      started.push(active);
      await sleep(active.holdMs);
      await this.heal(active).catch((err: Error) => this.o.log(`nemesis: healing ${kind} failed: ${err.message}`));
    }));
    const healedAt = Math.max(begin, ...started.map((a) => a.fault.healedAt ?? now()));
    const description = started.map((a) => `${a.fault.kind}(${a.fault.target})`).join(" + ") || "(nothing injected)";
    if (started.length === 0) return [];
    this.o.log(`nemesis: episode ${episode}: ${description} healed; waiting for every lock to grant again`);
    await this.awaitRecovery(episode, description, healedAt);
    return started.map((a) => a.fault.kind);
  }

  /** Waits until every lock granted after `healedAt`, bounded by the recovery timeout. */
  private async awaitRecovery(episode: number, faults: string, healedAt: number): Promise<void> {
    const { locks, lastGrant, recoveryTimeoutMs } = this.o;
    const deadline = healedAt + recoveryTimeoutMs;
    const byLock = new Map<string, number | undefined>();
    while (now() < deadline) {
      for (const lock of locks) {
        const last = lastGrant(lock);
        if (last !== undefined && last >= healedAt && !byLock.has(lock)) byLock.set(lock, last - healedAt);
      }
      if (byLock.size === locks.length) break;
      await sleep(100);
    }
    for (const lock of locks) if (!byLock.has(lock)) byLock.set(lock, undefined);
    const longest = Math.max(...[...byLock.values()].map((v) => v ?? Infinity));
    this.recoveries.push({ episode, faults, healedAt, byLock, longest });
    this.o.log(`nemesis: episode ${episode} recovered in ${Number.isFinite(longest) ? `${Math.round(longest)}ms` : "NEVER (within the timeout)"}`);
  }

  private async inject(kind: FaultKind, episode: number, used: Set<string>): Promise<Active | undefined> {
    const o = this.o;
    const fault: Fault = { kind, target: "", episode, injectedAt: now() };
    const ctx: FaultContext = {
      random: o.random, fleets: o.fleets, servers: o.servers, restartable: o.restartable, clusters: o.clusters, holders: o.holders,
      counters: o.counters, sentinel: o.sentinel, lockLeaseMs: o.lockLeaseMs, leaderLeaseMs: o.leaderLeaseMs, log: o.log,
      post: (path, timeoutMs) => this.post(path, timeoutMs),
      take: (resource) => !used.has(resource) && !!used.add(resource),
      record: (target, skipped) => {
        Object.assign(fault, { target, skipped, injectedAt: now() });
        this.faults.push(fault);
        o.log(`nemesis: ${skipped ? "skipped" : "inject"} ${kind}(${target})${skipped ? `: ${skipped}` : ""}`);
      },
    };
    const injected = await INJECTORS[kind](ctx);
    return injected && this.track({ fault, ...injected });
  }

  private track(active: Active): Active {
    this.active.add(active);
    return active;
  }

  private async heal(active: Active): Promise<void> {
    if (!this.active.delete(active)) return;
    try {
      await active.heal();
    } finally {
      active.fault.healedAt = now();
    }
  }

  /** Heals whatever is still injected (on any exit path). */
  async healAll(): Promise<void> {
    for (const active of [...this.active]) await this.heal(active).catch((err: Error) => this.o.log(`nemesis: healing ${active.fault.kind} failed: ${err.message}`));
  }

  /**
   * Asks the test environment's control server. A request whose connection dropped ("fetch failed": the client
   * reused a kept-alive socket the server was closing) is sent once more; every action there may be repeated.
   */
  private async post(path: string, timeoutMs = 30_000): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        const res = await withTimeout(fetch(`${this.o.control}${path}`, { method: "POST" }), timeoutMs, `POST ${path}`);
        const body = await res.text();
        if (res.status !== 200) throw new Error(`POST ${path}: HTTP ${res.status} ${body.trim()}`);
        return;
      } catch (err) {
        if (attempt >= 2 || !(err instanceof TypeError && err.message === "fetch failed")) throw err;
      }
    }
  }
}
