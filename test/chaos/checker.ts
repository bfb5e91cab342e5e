/**
 * The checker: reads a run's full history (the fenced registers' critical sections, the claim history in
 * API server order, what each worker saw) and lists every violation with its evidence. Strict on purpose:
 * a violation is a bug to fix, never something to tune away.
 *
 * Safety:
 * - register-overlap     more than maxHolders accepted critical sections overlap (register clock);
 * - register-order       a mutex register accepted a token not greater than the one before;
 * - duplicate-token      one fencing token granted to two claims of a lock (one report per lock);
 * - status-overlap       more than maxHolders claims of a lock shown Granted at once in one cluster's claim
 *                        history (Granted only while the backend hold exists; a vanished hold is Lost
 *                        before anything else is granted; a claim being deleted is no longer Granted);
 * - status-order         a mutex's grants, in one cluster's history order, do not carry increasing tokens
 *                        (one report per lock and cluster);
 * - token-order          a claim got a token not above one already granted on its lock, anywhere, before
 *                        the claim existed (see `tokenOrder`);
 * - granted-elsewhere    a claim shown Granted while the backend server's own holders exclude its hold and
 *                        fill every slot with others (see `judgeRound`, truth.ts);
 * - granted-without-hold a claim shown Granted while the backend server has no hold of it (same evidence);
 * - phase-transition     a claim left a terminal phase, or went from Granted back to Pending.
 *
 * Data loss (faults of DATA_LOSS_KINDS, e.g. Redis restarted empty) takes holds away under their holders;
 * no lock service can keep a claim from showing Granted until it notices. Overlaps (register-overlap,
 * status-overlap, granted-*) on that backend's locks from the loss until a lease after it healed are
 * therefore listed as `excused` (the fencing token is what protects then), never dropped; token checks
 * are never excused. A claim can only be shown Lost through the API server, so when the API server is away
 * meanwhile, the window runs until a lease after it is back (runner.ts computes the windows). For the same
 * reason, a hold that lapses while its cluster's API server is away (a backend paused or cut off meanwhile)
 * leaves its claim Granted until the API server is back and the operator's first writes went through: the
 * claim-status findings of that cluster (never a register overlap, never a token check) from the outage's
 * start until STATUS_FROZEN_GRACE_MS after it healed are excused, and listed.
 * A Redis Sentinel failover (`failover-redis`) is no data loss and excuses nothing: the `redis-sentinel` backend
 * grants with `waitReplicas` {replicas: 1}, so a claim is shown Granted only once the one replica, the one the
 * sentinels promote, has its hold; a hold whose lease runs out while no master answers is shown Lost by the
 * operator's deadline, which comes before the hold's expiry on the server, as in a backend pause.
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

/** One cluster's claim history, in its API server's order. */
export interface History {
  cluster: string;
  events: ClaimEvent[];
}

/** A claim as one list of the truth poller saw it: Granted with a token, not being deleted. */
export interface GrantedClaim {
  cluster: string;
  name: string;
  uid: string;
  lock: string;
  token: string;
}

/** A hold as the backend server lists it. */
export interface BackendHold {
  holderId: string;
  claim: string;
  cluster: string;
  token: string;
}

/**
 * One round of the truth poller (truth.ts), on the run's one clock: every cluster's claims listed
 * (finished at `listedAt`), then every lock's holders read from its backend server (between `readFrom`
 * and `readTo`), then the claims listed again (started at `relistedAt`). `granted` are the claims shown
 * Granted with the same token in both lists.
 */
export interface TruthRound {
  listedAt: number;
  readFrom: number;
  readTo: number;
  relistedAt: number;
  granted: GrantedClaim[];
  /** Per lock read successfully: its holds. */
  holds: Map<string, BackendHold[]>;
}

/** A window in which a backend lost its data (a fault of DATA_LOSS_KINDS). */
export interface DataLoss {
  /** The backend whose locks it concerns; undefined: every backend. */
  backend?: string;
  from: number;
  to: number;
  what: string;
  /** Only claim-status findings of this cluster's claims (their summary starts `<cluster>/`), never a register's. */
  statusOf?: string;
}

export interface Violation {
  kind: string;
  /** Safety (something wrong happened) or liveness (something expected did not happen in time). */
  class?: "safety" | "liveness";
  lock?: string;
  /** When it happened (run clock), where known. */
  at?: number;
  /** The faults under way then (set by the runner). */
  during?: string;
  summary: string;
  evidence: string[];
}

export interface CheckInput {
  locks: { name: string; maxHolders: number; backend?: string }[];
  registers: Map<string, FencedRegister>;
  histories: History[];
  records: ClaimRecord[];
  /** Per claim: a time before it was created (every claim of the run, CLI holders' too). */
  created: Map<string, number>;
  /** The truth poller's violations (judgeRound over its rounds). */
  observed?: Violation[];
  recoveries: Recovery[];
  /** Start of the run, for relative times in evidence. */
  t0: number;
}

/** What the checker found: violations, and overlaps excused by a backend's data loss. */
export interface Findings {
  violations: Violation[];
  excused: Violation[];
}

const at = (t0: number) => (t: number) => `+${((t - t0) / 1000).toFixed(3)}s`;

/** Terminal phase → the Granted condition reasons the README's "Claim phases and reasons" gives it. */
export const DOCUMENTED_ENDS: Record<string, string[]> = {
  Released: ["Released", "HolderTerminated", "LockNotFound"],
  Expired: ["LeaseExpired", "WaitTimeout"],
  Lost: ["Lost"],
  Rejected: ["InvalidSpec"],
};
const TERMINAL = new Set(Object.keys(DOCUMENTED_ENDS));

export function check(input: CheckInput): Violation[] {
  const out: Violation[] = [...(input.observed ?? [])];
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
          kind: "register-overlap", lock, at: p.t,
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
          out.push({ kind: "register-order", lock, at: b.enter, summary: `mutex register ${lock} accepted token ${b.token} after ${a.token}`, evidence: [sectionText(a), sectionText(b)] });
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
  const allEvents = input.histories.flatMap((h) => h.events);
  for (const e of allEvents) if (e.phase === "Granted" && e.fencingToken) own(e.lock, e.fencingToken, e.name);
  for (const [lock, register] of input.registers) for (const s of register.sections) own(lock, String(s.token), s.claim);
  for (const [lock, byToken] of owners) {
    // One violation per lock: after a backend lost its counter, every token repeats.
    const repeated = [...byToken].filter(([, claims]) => claims.size > 1);
    if (repeated.length === 0) continue;
    const [token, claims] = repeated[0];
    // When the token was seen Granted to its second claim.
    const firstSeen = new Map<string, number>();
    for (const e of allEvents) if (claims.has(e.name) && e.phase === "Granted" && !firstSeen.has(e.name)) firstSeen.set(e.name, e.t);
    const seen = [...firstSeen.values()].sort((a, b) => a - b);
    out.push({
      kind: "duplicate-token", lock, at: seen[1],
      summary: `${repeated.length} token(s) of ${lock} granted to more than one claim; the first: token ${token} to ${[...claims].join(", ")}`,
      evidence: [
        ...allEvents.filter((e) => claims.has(e.name) && e.phase === "Granted").slice(0, 6).map(eventText),
        ...repeated.slice(1, 6).map(([t, c]) => `token ${t}: ${[...c].join(", ")}`),
        ...(repeated.length > 6 ? [`... and ${repeated.length - 6} more tokens`] : []),
      ],
    });
  }

  // status-overlap, status-order and phase-transition: replay each cluster's claim history.
  for (const history of input.histories) {
    const granted = new Map<string, Map<string, string>>();
    const recent = new Map<string, ClaimEvent[]>();
    const overLimit = new Set<string>();
    const lastGrantToken = new Map<string, { token: bigint; event: ClaimEvent }>();
    const everGranted = new Set<string>();
    const phaseOf = new Map<string, string | undefined>();
    const transitionReported = new Set<string>(); // one report per claim
    const disorder = new Map<string, string[]>(); // status-order, per lock
    for (const e of history.events) {
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
      // A claim being deleted grants nothing from then on (the operator releases its hold without rewriting it).
      if (e.type !== "DELETED" && e.phase === "Granted" && !e.deleting) holders.set(e.name, e.fencingToken ?? "");
      else holders.delete(e.name);
      const max = maxOf.get(e.lock) ?? 1;
      if (holders.size > max && !overLimit.has(e.lock)) {
        overLimit.add(e.lock);
        out.push({
          kind: "status-overlap", lock: e.lock, at: e.t,
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
          const list = disorder.get(e.lock) ?? disorder.set(e.lock, []).get(e.lock)!;
          if (list.length === 0) out.push({ kind: "status-order", lock: e.lock, at: e.t, summary: "", evidence: list });
          list.push(`${e.name} token ${token} after ${last.event.name} token ${last.token} (seen ${at(e.t)})`);
        }
        if (!last || token > last.token) lastGrantToken.set(e.lock, { token, event: e });
      }
    }
    for (const v of out) {
      const list = v.kind === "status-order" && v.summary === "" ? disorder.get(v.lock!) : undefined;
      if (!list) continue;
      v.summary = `${history.cluster}: mutex ${v.lock} granted ${list.length} claim(s) a token not above the previous grant's`;
      v.evidence = list.length > 8 ? [...list.slice(0, 8), `... and ${list.length - 8} more`] : list;
    }
  }

  out.push(...tokenOrder(input.histories, input.created, input.t0));

  // Liveness of each claim.
  const eventsOf = (name: string) => allEvents.filter((e) => e.name === name).slice(-8).map(eventText);
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
      evidence: never.flatMap((lock) => allEvents.filter((e) => e.lock === lock && e.t >= rec.healedAt - 2000).slice(0, 8).map(eventText)),
    });
  }
  const liveness = new Set(["undocumented-end", "stuck-claim", "no-recovery", "left-behind"]);
  for (const v of out) v.class ??= liveness.has(v.kind) ? "liveness" : "safety";
  return out;
}

/**
 * token-order: per lock (one backend key, shared by every cluster), a claim's token must be above every
 * token granted on that lock before the claim existed. "Before" is judged on the safe side of every lag:
 * a grant counts from the moment its Granted status reached this process (the real grant came earlier),
 * and a claim exists from the moment its creator started creating it (the real creation, and so its
 * acquire, came later). A violation is therefore certain, whatever the watch lag: the backend issued a
 * token at or below one it had already issued (a counter lost or reset, a repeated token).
 */
export function tokenOrder(histories: History[], created: Map<string, number>, t0: number): Violation[] {
  const when = at(t0);
  const grants = new Map<string, { lock: string; name: string; token: bigint; seen: number }>();
  for (const h of histories) {
    for (const e of h.events) {
      if (e.type === "DELETED" || e.phase !== "Granted" || !e.fencingToken || grants.has(e.name)) continue;
      grants.set(e.name, { lock: e.lock, name: e.name, token: BigInt(e.fencingToken), seen: e.t });
    }
  }
  const out: Violation[] = [];
  for (const lock of new Set([...grants.values()].map((g) => g.lock))) {
    const all = [...grants.values()].filter((g) => g.lock === lock);
    const bySeen = [...all].sort((a, b) => a.seen - b.seen);
    const byCreated = all.filter((g) => created.has(g.name)).sort((a, b) => created.get(a.name)! - created.get(b.name)!);
    const offenders: string[] = [];
    let first: number | undefined;
    let k = 0;
    let highest: (typeof all)[number] | undefined;
    for (const g of byCreated) {
      const born = created.get(g.name)!;
      for (; k < bySeen.length && bySeen[k].seen < born; k++) if (!highest || bySeen[k].token > highest.token) highest = bySeen[k];
      if (!highest || g.token > highest.token) continue;
      first = Math.min(first ?? Infinity, g.seen);
      offenders.push(`${g.name} (created ${when(born)}, seen Granted ${when(g.seen)}) got token ${g.token}, yet ${highest.name} had been granted token ${highest.token} (seen ${when(highest.seen)})`);
    }
    if (offenders.length === 0) continue;
    out.push({
      kind: "token-order", lock, at: first,
      summary: `${offenders.length} claims of ${lock} got a token not above one granted before they existed`,
      evidence: offenders.length > 8 ? [...offenders.slice(0, 8), `... and ${offenders.length - 8} more`] : offenders,
    });
  }
  return out;
}

/**
 * granted-elsewhere and granted-without-hold in one truth round, with no watch in the way: a claim in
 * `round.granted` showed Granted (same token) in a list that finished before the backend read started and
 * in one that started after it ended; phases never return to Granted and a grant keeps its token (the
 * phase-transition check holds that), so it showed Granted during the whole backend read. The backend read
 * is one request (one Redis script, one etcd range, one Lease list), so its holders coexisted at one
 * instant within it. If they exclude the claim's hold (its UID with its token), the claim was Granted
 * without a hold then; if they also fill every slot with other holders, the backend had granted its slot
 * elsewhere while it showed Granted. Claims being deleted are not in `round.granted`: releasing writes
 * their status last. ZooKeeper lists a lock's children in one call and then reads each: a hold whose node
 * goes in between counts as absent, which it is by the end of the read, so granted-without-hold stays
 * exact there while granted-elsewhere could, in that narrow race, pair holders of two close instants.
 * Expiry in `holders()` is judged on this process's clock, which is the true one on this machine (only an
 * operator under `skew-clock` runs on a skewed one).
 */
export function judgeRound(round: TruthRound, maxOf: Map<string, number>, t0: number): Violation[] {
  const when = at(t0);
  const out: Violation[] = [];
  for (const g of round.granted) {
    const holds = round.holds.get(g.lock);
    if (!holds || holds.some((h) => h.holderId === g.uid && h.token === g.token)) continue;
    const others = holds.filter((h) => h.holderId !== g.uid);
    const max = maxOf.get(g.lock) ?? 1;
    const elsewhere = others.length >= max;
    out.push({
      kind: elsewhere ? "granted-elsewhere" : "granted-without-hold", lock: g.lock, at: round.readFrom,
      summary: elsewhere
        ? `${g.cluster}/${g.name} shown Granted with token ${g.token} while the backend's ${others.length} holder(s) of ${g.lock} (maxHolders ${max}) were others`
        : `${g.cluster}/${g.name} shown Granted with token ${g.token} while the backend had no hold of it`,
      evidence: [
        `claims listed Granted by ${when(round.listedAt)} and again from ${when(round.relistedAt)}; backend read ${when(round.readFrom)}..${when(round.readTo)}`,
        `backend holders of ${g.lock}: ${holds.map((h) => `${h.cluster || "\"\""}/${h.claim} (uid ${h.holderId.slice(0, 8)}) token ${h.token}`).join(", ") || "none"}`,
        `claim ${g.cluster}/${g.name} uid ${g.uid.slice(0, 8)} token ${g.token}`,
      ],
    });
  }
  return out;
}

/**
 * Moves the overlaps a backend's data loss explains (see the header) into `excused`: register-overlap,
 * status-overlap, granted-elsewhere and granted-without-hold on a lock of that backend, happening between
 * the loss and `graceMs` after it healed.
 */
/** After the API server is back: time for the operator's relist and first status writes (measured: under 0.5 s). */
export const STATUS_FROZEN_GRACE_MS = 2000;

export function excuseDataLoss(violations: Violation[], losses: DataLoss[], backendOf: Map<string, string>, graceMs: number): Findings {
  const overlap = new Set(["register-overlap", "status-overlap", "granted-elsewhere", "granted-without-hold"]);
  const explains = (l: DataLoss, v: Violation) => (l.backend === undefined || l.backend === backendOf.get(v.lock!))
    && (l.statusOf === undefined || (v.kind !== "register-overlap" && v.summary.startsWith(`${l.statusOf}/`)));
  const out: Findings = { violations: [], excused: [] };
  for (const v of violations) {
    const loss = v.lock && v.at !== undefined && overlap.has(v.kind)
      ? losses.find((l) => explains(l, v) && v.at! >= l.from && v.at! <= l.to + graceMs)
      : undefined;
    if (loss) out.excused.push({ ...v, summary: `${v.summary} [excused: ${loss.what}]` });
    else out.violations.push(v);
  }
  return out;
}
