/**
 * The grant decision: who holds, who ends, who is next. A pure function of the lock's claims, their
 * facts (pod state, deadlines) and the backend's holds, with no I/O, so it is tested on its own.
 *
 * Rules, in order:
 * 1. A claim in a terminal phase never holds again; a hold it still has is released.
 * 2. A claim that must end (deleted, released, pod ended, heartbeat expired, wait timed out) ends and
 *    moves to the matching terminal phase; the caller releases its hold, whether or not the backend
 *    listed one (release is owner-checked and idempotent, and also clears an acquire cut short).
 * 3. A claim shown Granted whose backend hold is gone is Lost, before anything else is granted; so is one
 *    whose hold's validity deadline passed without a confirmed renewal (the backend may let it go any moment).
 * 4. Lock-delay (as Chubby's): a hold whose claim ended Lost or LeaseExpired is not released at once. Its holder
 *    may still be at work until it notices, so the hold is left to lapse (`lapsing`: not renewed, still taking its
 *    slot) and the caller releases it only once the lease has run out since the ending.
 * 5. A hold of this cluster that no live claim owns (its claim is gone) is released. A hold is this cluster's when
 *    it carries its name, belongs to one of its claims, or lives on this process's own backend session.
 * 6. The remaining claims that hold keep holding; the rest wait in a queue ordered by priority
 *    (higher first), then creation time, then name. The first `free` of the queue should be granted,
 *    where `free` = maxHolders − holds kept − holds lapsing − holds of other clusters.
 * 7. The backend's queue orders clusters: the front of this cluster's queue, as many claims as it could hold
 *    (maxHolders − its own holds), keep entries there (`enqueue`); any other entry of this cluster (a claim that
 *    fell back behind a higher priority, or whose claim is gone) is withdrawn, so local priorities still hold and
 *    the backend does not fill with every local waiter.
 */
import { ClaimReason, TERMINAL_PHASES, type ClaimPhase } from "../api/types";

export interface ClaimFacts {
  /** The claim's UID: the backend holder id. */
  id: string;
  name: string;
  priority: number;
  /** Creation time, ms since the epoch. */
  createdAt: number;
  phase?: ClaimPhase;
  /** Why the claim must end now, if it must (see `endReasonOf`). */
  end?: ClaimEnd;
  /** The claim's pod is missing: it cannot be granted yet (nor is it queued). */
  blocked?: boolean;
  /** Ended in a way whose hold must lapse rather than be released (Lost, LeaseExpired); see rule 4. */
  lapses?: boolean;
  /** Its hold's validity deadline passed without a confirmed renewal (rule 3). */
  validityPassed?: boolean;
}

export interface ClaimEnd {
  reason: ClaimReason;
  message: string;
}

export interface HoldRef {
  holderId: string;
  /** The granting cluster's name. */
  cluster: string;
  /** It lives on this process's own backend session: ours whatever its cluster name (see HolderInfo). */
  ownSession?: boolean;
}

export interface DecisionInput {
  maxHolders: number;
  /** This operator's cluster name: holds of other clusters count against slots but are not ours. */
  cluster: string;
  claims: ClaimFacts[];
  holds: HoldRef[];
  /** The backend queue's entries that do not hold, from every cluster (default none). */
  entries?: HoldRef[];
}

export interface Ending {
  id: string;
  phase: ClaimPhase;
  reason: ClaimReason;
  message: string;
  /** Whether its hold is released now (false: it lapses, rule 4). */
  release: boolean;
}

export interface Decision {
  /** Claims that end now, and how. */
  endings: Ending[];
  /** Holds of this cluster whose claim no longer exists or ended for good: release them. */
  orphans: string[];
  /** Holds of this cluster left to lapse (rule 4): not renewed, released once their lease ran out. */
  lapsing: string[];
  /** Claims that hold and keep holding. */
  keep: string[];
  /** Waiting claims, best first. */
  queue: string[];
  /** How many from the front of `queue` may be granted now. */
  grantable: number;
  /** How many from the front of `queue` wait in the backend's queue (rule 7). */
  enqueue: number;
  /** This cluster's backend queue entries to withdraw (rule 7); endings withdraw their own. */
  withdraw: string[];
}

/** The phase a claim ends in for each end reason. */
const END_PHASE: Partial<Record<ClaimReason, ClaimPhase>> = {
  [ClaimReason.Released]: "Released",
  [ClaimReason.HolderTerminated]: "Released",
  [ClaimReason.LockNotFound]: "Released",
  [ClaimReason.LeaseExpired]: "Expired",
  [ClaimReason.WaitTimeout]: "Expired",
  [ClaimReason.Lost]: "Lost",
  [ClaimReason.InvalidSpec]: "Rejected",
};

export function phaseForEnd(reason: ClaimReason): ClaimPhase {
  return END_PHASE[reason] ?? "Released";
}

/** Endings whose hold lapses instead of being released (rule 4). */
const LAPSING_REASONS: readonly ClaimReason[] = [ClaimReason.Lost, ClaimReason.LeaseExpired];

export function endsByLapse(reason: ClaimReason | string | undefined): boolean {
  return LAPSING_REASONS.includes(reason as ClaimReason);
}

const lost = (message: string): ClaimEnd => ({ reason: ClaimReason.Lost, message });

export function isTerminal(phase: ClaimPhase | undefined): boolean {
  return phase !== undefined && TERMINAL_PHASES.includes(phase);
}

export function decide(input: DecisionInput): Decision {
  // Ours: marked with our cluster name, held for one of our claims (UIDs are unique across clusters), or living on
  // this process's own backend session, so holds made before a change of clusterName (say, to the derived default)
  // are still kept, renewed and released, also when their claim went while no replica was watching.
  const claimIds = new Set(input.claims.map((c) => c.id));
  const ours = new Set(input.holds.filter((h) => h.cluster === input.cluster || claimIds.has(h.holderId) || h.ownSession).map((h) => h.holderId));
  const foreign = input.holds.length - ours.size;
  const decision: Decision = { endings: [], orphans: [], lapsing: [], keep: [], queue: [], grantable: 0, enqueue: 0, withdraw: [] };
  const waiting: ClaimFacts[] = [];
  const end = (claim: ClaimFacts, { reason, message }: ClaimEnd) => {
    const release = !(ours.has(claim.id) && endsByLapse(reason));
    decision.endings.push({ id: claim.id, phase: phaseForEnd(reason), reason, message, release });
    if (!release) decision.lapsing.push(claim.id);
  };

  for (const claim of input.claims) {
    const held = ours.has(claim.id);
    if (isTerminal(claim.phase)) {
      if (held) (claim.lapses ? decision.lapsing : decision.orphans).push(claim.id);
    } else if (claim.end) {
      end(claim, claim.end);
    } else if (held && claim.validityPassed && claim.phase === "Granted") {
      end(claim, lost("the operator could not confirm the backend hold within its lease (backend unreachable or too slow); "
        + "stop work guarded by this claim's fencing token and create a new claim"));
    } else if (held) {
      decision.keep.push(claim.id);
    } else if (claim.phase === "Granted") {
      end(claim, lost("the backend hold vanished (it expired while the operator could not renew it); "
        + "stop work guarded by this claim's fencing token and create a new claim"));
    } else if (!claim.blocked) {
      waiting.push(claim);
    }
  }
  for (const id of ours) if (!claimIds.has(id)) decision.orphans.push(id);

  decision.queue = waiting.sort(queueOrder).map((c) => c.id);
  const taken = decision.keep.length + decision.lapsing.length + foreign;
  decision.grantable = Math.min(decision.queue.length, Math.max(0, input.maxHolders - taken));
  const ourLapsing = decision.lapsing.filter((id) => ours.has(id)).length;
  decision.enqueue = Math.min(decision.queue.length, Math.max(0, input.maxHolders - decision.keep.length - ourLapsing));
  const front = new Set(decision.queue.slice(0, decision.enqueue));
  const ending = new Set(decision.endings.map((e) => e.id));
  decision.withdraw = (input.entries ?? [])
    .filter((e) => (e.cluster === input.cluster || claimIds.has(e.holderId)) && !front.has(e.holderId) && !ending.has(e.holderId))
    .map((e) => e.holderId);
  return decision;
}

/** Priority (higher first), then creation time (earlier first), then name. */
export function queueOrder(a: ClaimFacts, b: ClaimFacts): number {
  return b.priority - a.priority || a.createdAt - b.createdAt || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
}
