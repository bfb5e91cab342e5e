/**
 * The truth poller: compares what claims show with what the backend servers hold, straight from the
 * servers (never through an operator or its relays). Each round lists every cluster's claims, reads
 * every lock's holders from its backend server, and lists the claims again; `judgeRound` (checker.ts)
 * says why a claim Granted in both lists was Granted during the whole backend read, whatever the lag of
 * any watch. Backends are read with the product's own `holders()` (the backend contract: every current
 * hold, from every cluster), on connections of their own. The built-in Lease backend is the exception: there
 * the API server is both the backend and the status store, expiry is each reader's own judgement (a lease
 * unchanged since it saw the API server again), and only the claim's own operator can give its slot away,
 * after writing the claim's ending. So what counts there is what the Leases name (`namedHolders`): a claim
 * shown Granted while no Lease names it, or while others fill its slots, is a violation.
 */
import type { LockBackend } from "../../src/backends/backend";
import type { LockClaim } from "../../src/api/types";
import type { Api } from "../support/operator";
import { judgeRound, type BackendHold, type GrantedClaim, type TruthRound, type Violation } from "./checker";
import { now, sleep, withTimeout } from "./util";

export interface TruthOptions {
  clusters: { name: string; api: Api }[];
  namespace: string;
  /** Each lock with its maxHolders and the backend (by name) that holds it. */
  locks: { name: string; maxHolders: number; backend: string }[];
  backends: Map<string, HolderReader>;
  intervalMs: number;
  t0: number;
}

/** What the poller reads a lock's holders with: a backend's `holders()`, or the Lease backend's `namedHolders()`. */
export type HolderReader = Pick<LockBackend, "holders" | "close">;

export class TruthPoller {
  /** Violations found, the first of each kind per claim. */
  readonly violations: Violation[] = [];
  rounds = 0;
  /** Rounds in which some read failed (those locks or clusters were not judged). */
  incomplete = 0;
  private stopped = false;
  private loop?: Promise<void>;
  private readonly reported = new Set<string>();
  private readonly maxOf: Map<string, number>;

  constructor(private readonly o: TruthOptions) {
    this.maxOf = new Map(o.locks.map((l) => [l.name, l.maxHolders]));
  }

  start(): void {
    this.loop = this.run();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.loop;
    await Promise.all([...this.o.backends.values()].map((b) => b.close().catch(() => undefined)));
  }

  private async run(): Promise<void> {
    while (!this.stopped) {
      const round = await this.round();
      if (round) {
        this.rounds++;
        for (const v of judgeRound(round, this.maxOf, this.o.t0)) {
          const key = `${v.kind}/${v.summary.split(" ")[0]}`;
          if (this.reported.has(key)) continue;
          this.reported.add(key);
          this.violations.push(v);
        }
      }
      await sleep(this.o.intervalMs);
    }
  }

  /** One round; undefined when a claim list failed (nothing can be judged then). */
  private async round(): Promise<TruthRound | undefined> {
    const before = await this.listGranted();
    if (!before) return undefined;
    const listedAt = now();
    const holds = new Map<string, BackendHold[]>();
    const readFrom = now();
    let failed = false;
    await Promise.all(this.o.locks.map(async (lock) => {
      try {
        const list = await withTimeout(this.o.backends.get(lock.backend)!.holders(`${this.o.namespace}/${lock.name}`), 3000, `holders of ${lock.name}`);
        holds.set(lock.name, list.map((h) => ({ holderId: h.holderId, claim: h.claim, cluster: h.cluster, token: h.fencingToken })));
      } catch {
        failed = true; // the server is down or paused: this lock is not judged this round
      }
    }));
    const readTo = now();
    const relistedAt = now();
    const after = await this.listGranted();
    if (!after) return undefined;
    if (failed) this.incomplete++;
    const again = new Set(after.map((g) => `${g.uid}/${g.token}`));
    return { listedAt, readFrom, readTo, relistedAt, granted: before.filter((g) => again.has(`${g.uid}/${g.token}`)), holds };
  }

  /** Every cluster's claims Granted with a token and not being deleted; undefined if a list failed. */
  private async listGranted(): Promise<GrantedClaim[] | undefined> {
    try {
      const lists = await Promise.all(this.o.clusters.map(async (c) => {
        const claims: LockClaim[] = await withTimeout(c.api.listClaims(), 5000, `list claims of ${c.name}`);
        return claims
          .filter((claim) => claim.status?.phase === "Granted" && claim.status.fencingToken && !claim.metadata.deletionTimestamp)
          .map((claim) => ({ cluster: c.name, name: claim.metadata.name, uid: claim.metadata.uid ?? "", lock: claim.spec.lockName, token: claim.status!.fencingToken! }));
      }));
      return lists.flat();
    } catch {
      this.incomplete++;
      return undefined;
    }
  }
}
