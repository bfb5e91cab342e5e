/**
 * The nemesis: injects faults in episodes, each fault alone or several mixed (overlapping, at random
 * offsets), heals them, then waits until every lock grants again (the recovery time) before the next
 * episode. Faults:
 *
 * - `kill-operator`     SIGKILL the leading operator replica (the supervisor starts a replacement);
 * - `pause-operator`    SIGSTOP the leader for longer than the locks' lease and the leader lease, then SIGCONT;
 * - `pause-backend`     SIGSTOP a backend server (redis, zookeeper, etcd) longer than the lease, then SIGCONT;
 * - `restart-backend`   stop a backend server, start it again on the same address and data;
 * - `restart-apiserver` restart kube-apiserver (same port, certificates, etcd data);
 * - `lose-member`       stop one member of a clustered backend server (3-member etcd or ZooKeeper) for longer
 *                       than the lease, then start it again: the others keep a quorum;
 * - `lose-majority`     stop a majority of its members (two of three), one after the other, for longer than
 *                       the lease, then start them again: the server is unavailable until then.
 *
 * Backend and API server faults go through the environment's loopback control endpoint. Whatever
 * happens, every fault injected is healed (`healAll`), so no process is left stopped.
 */
import type { OperatorFleet, Replica } from "./operators";
import { now, Random, sleep, withTimeout } from "./util";

export const FAULT_KINDS = ["kill-operator", "pause-operator", "pause-backend", "restart-backend", "restart-apiserver", "lose-member", "lose-majority"] as const;
/** The kinds that need a clustered backend server. */
export const CLUSTER_FAULT_KINDS: readonly FaultKind[] = ["lose-member", "lose-majority"];
export type FaultKind = (typeof FAULT_KINDS)[number];
export type ServerName = "redis" | "zookeeper" | "etcd";

export interface Fault {
  kind: FaultKind;
  /** What it hit: "operator-N", a backend server's name, "SERVER/M,N" (its members M and N), "kube-apiserver". */
  target: string;
  /** The episode it belongs to (faults of one episode overlap). */
  episode: number;
  injectedAt: number;
  healedAt?: number;
  /** Why it could not be injected, if it was not. */
  skipped?: string;
}

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
  fleet: OperatorFleet;
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
interface Active {
  fault: Fault;
  heal: () => Promise<void>;
  /** How long it lasts before healing, ms. */
  holdMs: number;
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
    const finished = () => alone.length === 0 && mixed <= 0 && o.done();
    try {
      for (let n = 0; n < 10_000 && !finished(); n++) {
        await sleep(o.random.int(...o.gapMs));
        if (finished()) break;
        if (o.kinds.length === 0) {
          mixed = 0;
          continue; // a run without faults (a baseline): just wait for the end
        }
        const kinds = alone.length > 0 ? [alone.shift()!] : this.pickMix(mixed > 0);
        // A required mixed episode counts only when two faults really went in (one can be skipped,
        // e.g. when both would hit the same process).
        if ((await this.runEpisode(kinds)) > 1) mixed--;
      }
    } finally {
      await this.healAll();
    }
  }

  private pickMix(forceMix: boolean): FaultKind[] {
    const { random, kinds, mixChance } = this.o;
    if (!forceMix && random.next() >= mixChance) return [random.pick(kinds)];
    return random.shuffle(kinds).slice(0, random.int(2, Math.max(2, this.o.maxMix)));
  }

  /** Injects `kinds` (at random offsets), heals them, waits for recovery; returns how many went in. */
  private async runEpisode(kinds: FaultKind[]): Promise<number> {
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
    if (started.length === 0) return 0;
    this.o.log(`nemesis: episode ${episode}: ${description} healed; waiting for every lock to grant again`);
    await this.awaitRecovery(episode, description, healedAt);
    return started.length;
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
    const record = (target: string, skipped?: string) => {
      Object.assign(fault, { target, skipped, injectedAt: now() });
      this.faults.push(fault);
      o.log(`nemesis: ${skipped ? "skipped" : "inject"} ${kind}(${target})${skipped ? `: ${skipped}` : ""}`);
    };
    // Longer than the lock's lease (holds expire) and than the leader lease (a follower takes over).
    const longPause = () => Math.max(o.lockLeaseMs, o.leaderLeaseMs) + o.random.int(1000, 2500);
    if (kind === "kill-operator" || kind === "pause-operator") {
      if (used.has("operator")) return undefined;
      used.add("operator");
      const leader = await o.fleet.waitForLeader(20_000);
      if (!leader) {
        record("operator", "no identifiable leader within 20 s");
        return undefined;
      }
      record(`operator-${leader.index}`);
      if (kind === "kill-operator") {
        leader.signal("SIGKILL");
        return this.track({ fault, holdMs: 0, heal: async () => undefined });
      }
      leader.signal("SIGSTOP");
      return this.track({ fault, holdMs: longPause(), heal: async () => resume(leader) });
    }
    if (kind === "restart-apiserver") {
      if (used.has("apiserver")) return undefined;
      used.add("apiserver");
      record("kube-apiserver");
      await this.post(`/controlplanes/1/apiserver/restart`, 120_000);
      return this.track({ fault, holdMs: 0, heal: async () => undefined });
    }
    if (kind === "lose-member" || kind === "lose-majority") return this.loseMembers(kind, fault, record, used);
    const free = (kind === "restart-backend" ? o.restartable : o.servers).filter((s) => !used.has(s));
    if (free.length === 0) return undefined;
    const server = o.random.pick(free);
    used.add(server);
    record(server);
    if (kind === "pause-backend") {
      await this.post(`/services/${server}/pause`);
      return this.track({ fault, holdMs: longPause(), heal: () => this.post(`/services/${server}/resume`) });
    }
    await this.post(`/services/${server}/stop`);
    return this.track({ fault, holdMs: o.random.int(300, 2000), heal: () => this.post(`/services/${server}/start`, 120_000) });
  }

  /**
   * Stops one member (`lose-member`) or a majority (`lose-majority`) of a clustered server, one after the
   * other, for longer than the lock's lease; healing starts them all at once. Stops that fail are undone.
   */
  private async loseMembers(kind: "lose-member" | "lose-majority", fault: Fault, record: (target: string) => void, used: Set<string>): Promise<Active | undefined> {
    const { random, clusters } = this.o;
    const free = (Object.keys(clusters) as ServerName[]).filter((s) => !used.has(s));
    if (free.length === 0) return undefined;
    const server = random.pick(free);
    used.add(server);
    const size = clusters[server]!;
    const count = kind === "lose-member" ? 1 : Math.floor(size / 2) + 1;
    const members = random.shuffle(Array.from({ length: size }, (_, i) => i + 1)).slice(0, count); // stopped in this order
    record(`${server}/${members.join(",")}`);
    const heal = async () => {
      await Promise.all(members.map((m) => this.post(`/services/${server}/members/${m}/start`, 120_000)));
    };
    const begin = now();
    try {
      for (const m of members) await this.post(`/services/${server}/members/${m}/stop`);
      this.o.log(`nemesis: ${kind}(${fault.target}): down after ${Math.round(now() - begin)}ms`);
    } catch (err) {
      await heal().catch(() => undefined);
      throw err;
    }
    return this.track({ fault, holdMs: this.o.lockLeaseMs + random.int(1000, 2500), heal });
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

  private async post(path: string, timeoutMs = 30_000): Promise<void> {
    const res = await withTimeout(fetch(`${this.o.control}${path}`, { method: "POST" }), timeoutMs, `POST ${path}`);
    const body = await res.text();
    if (res.status !== 200) throw new Error(`POST ${path}: HTTP ${res.status} ${body.trim()}`);
  }
}

function resume(replica: Replica): Promise<void> {
  replica.signal("SIGCONT");
  return Promise.resolve();
}
