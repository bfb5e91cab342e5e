/**
 * Workers: in-process loops that use a lock the way a workload does, through the API only.
 *
 * One cycle: create a LockClaim → wait until it is Granted (the claim history's watch, with a slow poll as
 * a fallback) or ends → re-read the claim and, only if it is still Granted with the same token, enter the
 * fenced register with that token → hold a random short time → leave → delete the claim. Every API call is
 * retried until a deadline (the API server may be restarting); every loop is bounded in count and time.
 */
import * as k8s from "@kubernetes/client-node";
import { TERMINAL_PHASES, type LockClaim } from "../../src/api/types";
import { Api } from "../support/operator";
import type { ClaimEvent, ClaimLog } from "./history";
import type { FencedRegister } from "./register";
import { errorText, now, Random, retry, sleep, withTimeout } from "./util";

export type ClaimOutcome =
  /** Granted, re-checked, entered the register and left. */
  | "entered"
  /** Granted, but the register rejected its token (a stale holder, fenced off). */
  | "fenced"
  /** Seen Granted, but no longer Granted (or another token) when re-read before entering. */
  | "ended-before-enter"
  /** Ended (terminal phase) without being seen Granted. */
  | "ended"
  /** Neither granted nor ended by the run's last deadline. */
  | "stuck";

/** Everything known about one claim a worker created. */
export interface ClaimRecord {
  name: string;
  lock: string;
  worker: string;
  created: number;
  /** When the worker first saw it Granted, and with which token. */
  grantedAt?: number;
  token?: string;
  outcome?: ClaimOutcome;
  /** The status that decided the outcome (phase, condition reason and message). */
  phase?: string;
  reason?: string;
  message?: string;
  /** The delete call was accepted (or the claim was already gone). */
  deleted?: boolean;
}

export interface WorkerContext {
  api: Api;
  log: ClaimLog;
  registers: Map<string, FencedRegister>;
  records: ClaimRecord[];
  random: Random;
  /** Critical section length, ms. */
  holdMs: [number, number];
  /**
   * Long critical sections, to span faults: with this chance a worker holds for `longHoldMs` instead, and
   * then, as a real workload must, leaves as soon as its claim stops showing Granted with its token (Lost).
   */
  longHolds?: { chance: number; ms: [number, number] };
  /** True once workers should not start another cycle. */
  stopping: () => boolean;
  /** The latest moment anything may still be waited for (`now()` scale); moves as the run goes. */
  deadline: () => number;
  /** Cycles per worker at most (a bound; the run normally ends first). */
  maxCycles: number;
  report: (line: string) => void;
}

const terminal = (phase?: string) => phase !== undefined && (TERMINAL_PHASES as readonly string[]).includes(phase);

export class Worker {
  private seq = 0;
  constructor(readonly id: string, readonly lock: string, private readonly ctx: WorkerContext) {}

  async run(): Promise<void> {
    for (let cycle = 0; cycle < this.ctx.maxCycles && !this.ctx.stopping(); cycle++) {
      try {
        await this.cycle();
      } catch (err) {
        this.ctx.report(`worker ${this.id}: ${errorText(err)}`);
        if (now() > this.ctx.deadline()) return;
        await sleep(200);
      }
    }
  }

  private async cycle(): Promise<void> {
    const { api, registers, random } = this.ctx;
    const record: ClaimRecord = { name: `${this.id}-${this.seq++}`, lock: this.lock, worker: this.id, created: now() };
    this.ctx.records.push(record);
    await retry(`create claim ${record.name}`, () => api.createClaim(record.name, { lockName: this.lock }).then(
      () => undefined,
      (err) => {
        // A create whose answer was lost may have happened: the claim exists, which is what was asked.
        if (err instanceof k8s.ApiException && err.code === 409) return undefined;
        throw err;
      },
    ), this.ctx.deadline());
    try {
      const seen = await this.waitGrantedOrEnded(record.name);
      if (!seen) {
        record.outcome = "stuck";
        const last = this.ctx.log.latest.get(record.name);
        Object.assign(record, { phase: last?.phase, reason: last?.reason, message: last?.message });
        return;
      }
      Object.assign(record, { phase: seen.phase, reason: seen.reason, message: seen.message });
      if (seen.phase !== "Granted") {
        record.outcome = "ended";
        return;
      }
      record.grantedAt = seen.t;
      record.token = seen.fencingToken;
      // Re-check right before entering: the claim must still be Granted, with the same token.
      const fresh = await retry(`get claim ${record.name}`, () => api.getClaim(record.name), this.ctx.deadline());
      if (fresh?.status?.phase !== "Granted" || fresh.status.fencingToken !== record.token) {
        record.outcome = "ended-before-enter";
        Object.assign(record, statusOf(fresh));
        return;
      }
      const register = registers.get(this.lock)!;
      const section = register.enter(this.id, record.name, BigInt(record.token!));
      if (!section) {
        record.outcome = "fenced";
        return;
      }
      try {
        const long = this.ctx.longHolds && random.next() < this.ctx.longHolds.chance ? this.ctx.longHolds.ms : undefined;
        if (long) await this.holdUnlessLost(record, random.int(...long));
        else await sleep(random.int(...this.ctx.holdMs));
      } finally {
        register.leave(section);
      }
      record.outcome = "entered";
    } finally {
      await retry(`delete claim ${record.name}`, () => api.deleteClaim(record.name).catch((err) => {
        if (err instanceof k8s.ApiException && err.code === 404) return;
        throw err;
      }), this.ctx.deadline());
      record.deleted = true;
    }
  }

  /** Sleeps `ms`, or less: until the history shows the claim no longer Granted with its token. */
  private async holdUnlessLost(record: ClaimRecord, ms: number): Promise<void> {
    let unsubscribe = () => {};
    const lost = new Promise<void>((resolve) => {
      unsubscribe = this.ctx.log.on((e) => {
        if (e.name === record.name && (e.phase !== "Granted" || e.fencingToken !== record.token)) resolve();
      });
    });
    try {
      await Promise.race([sleep(ms), lost]);
    } finally {
      unsubscribe();
    }
  }

  /**
   * The first observation of the claim Granted (with a token) or in a terminal phase; undefined if neither
   * came before the deadline. Woken by the claim history; polls every 2 s in case the watch is away.
   */
  private waitGrantedOrEnded(name: string): Promise<ClaimEvent | undefined> {
    const { log, api } = this.ctx;
    const decisive = (e: ClaimEvent | undefined) => !!e && ((e.phase === "Granted" && !!e.fencingToken) || terminal(e.phase));
    return new Promise((resolve) => {
      let finished = false;
      const finish = (e: ClaimEvent | undefined) => {
        if (finished) return;
        finished = true;
        unsubscribe();
        clearTimeout(timer);
        resolve(e);
      };
      const unsubscribe = log.on((e) => {
        if (e.name === name && decisive(e)) finish(e);
      });
      let timer: NodeJS.Timeout | undefined;
      const poll = async () => {
        if (finished) return;
        if (now() > this.ctx.deadline()) return finish(undefined);
        const cached = log.latest.get(name);
        if (decisive(cached)) return finish(cached);
        try {
          const claim = await withTimeout(api.getClaim(name), 5000, `get claim ${name}`);
          const polled = claim && fromClaim(claim);
          if (decisive(polled)) return finish(polled);
        } catch {
          // the API server may be away; the next poll tries again
        }
        if (!finished) timer = setTimeout(() => void poll(), 2000);
      };
      void poll();
    });
  }
}

function statusOf(claim: LockClaim | undefined): Pick<ClaimRecord, "phase" | "reason" | "message"> {
  if (!claim) return { phase: "(deleted)" };
  const condition = claim.status?.conditions?.find((c) => c.type === "Granted");
  return { phase: claim.status?.phase, reason: condition?.reason, message: condition?.message };
}

/** A polled claim as an observation (not part of the history's order: `seq` -1). */
function fromClaim(claim: LockClaim): ClaimEvent {
  return {
    seq: -1, t: now(), type: "MODIFIED", name: claim.metadata.name, lock: claim.spec.lockName,
    resourceVersion: claim.metadata.resourceVersion ?? "", fencingToken: claim.status?.fencingToken, deleting: !!claim.metadata.deletionTimestamp,
    ...statusOf(claim),
  };
}
