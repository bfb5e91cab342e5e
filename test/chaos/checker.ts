/**
 * The checker: reads a run's full history (the fenced registers' critical sections, the claim history in
 * API server order, what each worker saw) and lists every violation with its evidence. Strict on purpose:
 * a violation is a bug to fix, never something to tune away.
 *
 * Safety:
 * - register-overlap     more than maxHolders accepted critical sections overlap (register clock);
 * - register-order       a mutex register accepted a token not greater than the one before;
 * - duplicate-token      one fencing token granted to two claims of a lock;
 * - status-overlap       more than maxHolders claims of a lock shown Granted at once in the claim history
 *                        (DESIGN: Granted only while the backend hold exists; a vanished hold is Lost
 *                        before anything else is granted);
 * - status-order         a mutex's grants, in history order, do not carry increasing tokens;
 * - phase-transition     a claim left a terminal phase, or went from Granted back to Pending.
 * Liveness (once faults healed):
 * - undocumented-end     a claim ended without the documented phase/reason pair;
 * - stuck-claim          a claim neither granted nor ended by the run's last deadline;
 * - no-recovery          a lock granted nothing within the recovery timeout after an episode healed;
 * plus whatever the runner adds (claims or holds left behind).
 */
import type { ClaimEvent } from "./history";
import type { Recovery } from "./nemesis";
import type { FencedRegister, Section } from "./register";
import type { ClaimRecord } from "./workers";

export interface Violation {
  kind: string;
  /** Safety (something wrong happened) or liveness (something expected did not happen in time). */
  class?: "safety" | "liveness";
  lock?: string;
  summary: string;
  evidence: string[];
}

export interface CheckInput {
  locks: { name: string; maxHolders: number }[];
  registers: Map<string, FencedRegister>;
  events: ClaimEvent[];
  records: ClaimRecord[];
  recoveries: Recovery[];
  /** Start of the run, for relative times in evidence. */
  t0: number;
}

/** Terminal phase → the Granted condition reasons DESIGN documents for it. */
export const DOCUMENTED_ENDS: Record<string, string[]> = {
  Released: ["Released", "HolderTerminated", "LockNotFound"],
  Expired: ["LeaseExpired", "WaitTimeout"],
  Lost: ["Lost"],
  Rejected: ["InvalidSpec"],
};
const TERMINAL = new Set(Object.keys(DOCUMENTED_ENDS));

export function check(input: CheckInput): Violation[] {
  const out: Violation[] = [];
  const at = (t: number) => `+${((t - input.t0) / 1000).toFixed(3)}s`;
  const sectionText = (s: Section) => `${s.claim} (worker ${s.worker}) token ${s.token} entered ${at(s.enter)} left ${s.leave === undefined ? "never" : at(s.leave)}`;
  const eventText = (e: ClaimEvent) => e.type === "reset"
    ? `#${e.seq} ${at(e.t)} -- watch restarted from a list (events in between unseen) --`
    : `#${e.seq} ${at(e.t)} ${e.type} ${e.name} rv=${e.resourceVersion} phase=${e.phase ?? "-"} token=${e.fencingToken ?? "-"} reason=${e.reason ?? "-"}${e.deleting ? " (deleting)" : ""}${e.message && e.phase !== "Pending" ? ` "${e.message.slice(0, 120)}"` : ""}`;
  const maxOf = new Map(input.locks.map((l) => [l.name, l.maxHolders]));

  for (const [lock, register] of input.registers) {
    // register-overlap: sweep enters and leaves (a leave before an enter at the same instant).
    const points = register.sections.flatMap((s) => [{ t: s.enter, d: 1, s }, { t: s.leave ?? Infinity, d: -1, s }]);
    points.sort((a, b) => a.t - b.t || a.d - b.d);
    const open = new Set<Section>();
    let reported = false;
    for (const p of points) {
      if (p.d > 0) open.add(p.s);
      else open.delete(p.s);
      if (open.size > register.maxHolders && !reported) {
        reported = true;
        out.push({
          kind: "register-overlap", lock,
          summary: `${open.size} accepted critical sections overlap on ${lock} (maxHolders ${register.maxHolders}) at ${at(p.t)}`,
          evidence: [...open].map(sectionText),
        });
      } else if (open.size <= register.maxHolders) reported = false;
    }
    // register-order: a mutex register's accepted tokens strictly increase.
    if (register.mutex) {
      for (let i = 1; i < register.sections.length; i++) {
        const [a, b] = [register.sections[i - 1], register.sections[i]];
        if (b.token <= a.token) {
          out.push({ kind: "register-order", lock, summary: `mutex register ${lock} accepted token ${b.token} after ${a.token}`, evidence: [sectionText(a), sectionText(b)] });
        }
      }
    }
  }

  // duplicate-token: from the claim history and from the registers.
  const owners = new Map<string, Map<string, Set<string>>>();
  const own = (lock: string, token: string, claim: string) => {
    const byToken = owners.get(lock) ?? owners.set(lock, new Map()).get(lock)!;
    (byToken.get(token) ?? byToken.set(token, new Set()).get(token)!).add(claim);
  };
  for (const e of input.events) if (e.phase === "Granted" && e.fencingToken) own(e.lock, e.fencingToken, e.name);
  for (const [lock, register] of input.registers) for (const s of register.sections) own(lock, String(s.token), s.claim);
  for (const [lock, byToken] of owners) {
    for (const [token, claims] of byToken) {
      if (claims.size < 2) continue;
      out.push({
        kind: "duplicate-token", lock, summary: `token ${token} of ${lock} granted to ${[...claims].join(", ")}`,
        evidence: input.events.filter((e) => claims.has(e.name) && e.phase === "Granted").slice(0, 10).map(eventText),
      });
    }
  }

  // status-overlap, status-order and phase-transition: replay the claim history.
  const granted = new Map<string, Map<string, string>>();
  const recent = new Map<string, ClaimEvent[]>();
  const overLimit = new Set<string>();
  const lastGrantToken = new Map<string, { token: bigint; event: ClaimEvent }>();
  const everGranted = new Set<string>();
  const phaseOf = new Map<string, string | undefined>();
  const transitionReported = new Set<string>(); // one report per claim
  for (const e of input.events) {
    if (e.type === "reset") {
      granted.clear();
      for (const list of recent.values()) list.push(e);
      continue;
    }
    const window = recent.get(e.lock) ?? recent.set(e.lock, []).get(e.lock)!;
    window.push(e);
    if (window.length > 12) window.shift();
    const holders = granted.get(e.lock) ?? granted.set(e.lock, new Map()).get(e.lock)!;
    const before = phaseOf.get(e.name);
    if (e.type !== "DELETED" && !transitionReported.has(e.name)) {
      if (before !== undefined && TERMINAL.has(before) && e.phase !== before) {
        transitionReported.add(e.name);
        out.push({ kind: "phase-transition", lock: e.lock, summary: `claim ${e.name} left terminal phase ${before} for ${e.phase}`, evidence: window.filter((w) => w.name === e.name).map(eventText) });
      } else if (before === "Granted" && e.phase === "Pending") {
        transitionReported.add(e.name);
        out.push({ kind: "phase-transition", lock: e.lock, summary: `claim ${e.name} went from Granted back to Pending`, evidence: window.filter((w) => w.name === e.name).map(eventText) });
      }
    }
    if (e.type !== "DELETED") phaseOf.set(e.name, e.phase);
    if (e.type !== "DELETED" && e.phase === "Granted") holders.set(e.name, e.fencingToken ?? "");
    else holders.delete(e.name);
    const max = maxOf.get(e.lock) ?? 1;
    if (holders.size > max && !overLimit.has(e.lock)) {
      overLimit.add(e.lock);
      out.push({
        kind: "status-overlap", lock: e.lock,
        summary: `${holders.size} claims of ${e.lock} shown Granted at once (maxHolders ${max}): ${[...holders].map(([n, t]) => `${n}/token ${t}`).join(", ")}`,
        evidence: [...window].map(eventText),
      });
    } else if (holders.size <= max) overLimit.delete(e.lock);
    // status-order: a mutex's first Granted of each claim, in history order, has a larger token than the last.
    if (max === 1 && e.phase === "Granted" && e.fencingToken && e.type !== "DELETED" && !everGranted.has(e.name)) {
      everGranted.add(e.name);
      const token = BigInt(e.fencingToken);
      const last = lastGrantToken.get(e.lock);
      if (last && token <= last.token) {
        out.push({ kind: "status-order", lock: e.lock, summary: `mutex ${e.lock} granted ${e.name} token ${token} after ${last.event.name} token ${last.token}`, evidence: [eventText(last.event), eventText(e)] });
      }
      if (!last || token > last.token) lastGrantToken.set(e.lock, { token, event: e });
    }
  }

  // Liveness of each claim.
  const eventsOf = (name: string) => input.events.filter((e) => e.name === name).slice(-8).map(eventText);
  for (const r of input.records) {
    const where = `claim ${r.name} (worker ${r.worker}, created ${at(r.created)})`;
    if (r.outcome === "stuck" || r.outcome === undefined) {
      out.push({
        kind: "stuck-claim", lock: r.lock,
        summary: `${where} was ${r.outcome === "stuck" ? "neither granted nor ended by the last deadline" : "abandoned by its worker (API calls failed until the deadline)"}: phase ${r.phase ?? "-"} reason ${r.reason ?? "-"}`,
        evidence: [`last message: ${r.message ?? "-"}`, ...eventsOf(r.name)],
      });
    } else if (r.outcome === "ended" || r.outcome === "ended-before-enter") {
      const documented = r.phase !== undefined && DOCUMENTED_ENDS[r.phase]?.includes(r.reason ?? "");
      if (!documented) {
        out.push({ kind: "undocumented-end", lock: r.lock, summary: `${where} ended as phase ${r.phase ?? "-"} reason ${r.reason ?? "-"}`, evidence: [`message: ${r.message ?? "-"}`, ...eventsOf(r.name)] });
      }
    }
  }

  for (const rec of input.recoveries) {
    const never = [...rec.byLock].filter(([, ms]) => ms === undefined).map(([lock]) => lock);
    if (never.length === 0) continue;
    out.push({
      kind: "no-recovery", summary: `after episode ${rec.episode} (${rec.faults}) healed at ${at(rec.healedAt)}, no grant on ${never.join(", ")} within the recovery timeout`,
      evidence: never.flatMap((lock) => input.events.filter((e) => e.lock === lock && e.t >= rec.healedAt - 2000).slice(0, 8).map(eventText)),
    });
  }
  const liveness = new Set(["undocumented-end", "stuck-claim", "no-recovery", "left-behind"]);
  for (const v of out) v.class ??= liveness.has(v.kind) ? "liveness" : "safety";
  return out;
}
