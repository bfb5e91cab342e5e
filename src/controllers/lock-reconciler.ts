/**
 * Reconciles one DistributedLock and every LockClaim that names it (claims are decided per lock: who
 * holds and who is next depends on all of them). Level-based and idempotent: it reads the lock and
 * its claims from the caches and the holds from the backend, decides with `decide()`, acts on the
 * backend, writes each changed status once, and asks to be requeued when a hold needs renewing or a
 * deadline falls.
 *
 * Safety order: grant = backend acquire, then the lock's status (its fencing high-water mark), then the claim's;
 * release = claim status, then backend release.
 *
 * Claims carry no finalizer (the operator removes the `kubelock.io/release` finalizer that earlier versions put on
 * them): a deleted claim is gone at once, and its hold goes on the evidence that it is gone, never on a cache miss
 * alone. Every hold this cluster acquired is released once its claim or its lock is gone:
 * - claim deleted: the watch's DELETE event for its UID queues its lock, whose next pass releases the hold as an
 *   orphan (or lets it lapse, lock-delay); where no replica watched, a live read shows the claim gone;
 * - claim gone while its acquire was in flight: the status write that would show the grant finds no claim (HTTP
 *   404), and the hold goes in that same pass;
 * - lock deleted: its finalizer stays until the holds of its claims, of its claims seen deleted and of listed
 *   orphans are released (see lockDeleted), since nothing visits the key once the lock is gone; a lock gone
 *   without that (its finalizer removed by other hands) gets the holds of the pass that found it gone released.
 */
import {
  ClaimReason, ConditionType, FIRST_PLACE_DELAY_MS, POD_UID_ANNOTATION, POSITION_REFRESH_MS, STATUS_REPORT_MS, STATUS_REPORTS_PER_SECOND, LOCK_DEFAULTS, LOCK_PLURAL, CLAIM_PLURAL, LockReason, RELEASE_FINALIZER,
  type DistributedLock, type DistributedLockStatus, type LockClaim, type LockClaimStatus, type LockHolder,
} from "../api/types";
import { setCondition } from "../api/conditions";
import {
  BackendConfigError, BackendUnavailableError, handOff, queueState, type AcquireRequest, type Hold, type HolderInfo, type LockBackend,
} from "../backends/backend";
import { assessClaim, claimPodUid, type PodState } from "../grant/claim-facts";
import { decide, isTerminal } from "../grant/decide";
import { isNotFound, statusCode } from "../kube/client";
import type { ReconcileResult } from "../runtime/workqueue";
import { blockedStatus, endedStatus, grantedStatus, waitingStatus } from "./claim-status";
import { ClaimIndex, type OperatorContext } from "./context";
import { showLostAsFollower } from "./follower-lost";
import { HoldRenewer, validityMarginMs, type TrackedHold } from "./hold-renewer";
import { ObservedVersions } from "../runtime/observed";
import { DeletedClaims } from "./deleted-claims";
import { ReportSchedule } from "./report-schedule";

/** Equal as JSON values, whatever the order of object keys (the API server keeps its own order). */
const sameJson = (a: unknown, b: unknown) => canonical(a) === canonical(b);
const canonical = (value: unknown): string => JSON.stringify(value, (_key, v: unknown) =>
  v && typeof v === "object" && !Array.isArray(v) ? Object.fromEntries(Object.entries(v).sort(([x], [y]) => (x < y ? -1 : x > y ? 1 : 0))) : v);

export class LockReconciler {
  /** Backend watches by lock key, while the lock has waiters or other clusters' holders: a release anywhere wakes them. */
  private readonly watches = new Map<string, { backendKey: string; stop: () => void }>();
  /** What this process remembers of each lock it reconciled (see LockMemory). */
  private readonly memory = new Map<string, LockMemory>();
  /** Turns for lock status writes that only record renewals (at most STATUS_REPORTS_PER_SECOND). */
  private readonly reports = new ReportSchedule(STATUS_REPORTS_PER_SECOND);
  /** Each configured backend as reconciles call it (see backendFor). */
  private readonly guarded = new WeakMap<LockBackend, LockBackend>();
  /** When this process first saw each heartbeat claim's current heartbeat, by lock (see assessClaim). */
  private readonly heartbeats = new ObservedVersions();
  /** When this process first saw each waiting claim (waitTimeoutSeconds counts from it). */
  private readonly waiting = new ObservedVersions();
  /** When this process first saw each claim that has no status yet (see FIRST_PLACE_DELAY_MS). */
  private readonly arrivals = new ObservedVersions();
  /** Claims this process saw deleted: a hold left by one goes without a live read (see orphanFate). */
  private readonly deletedClaims = new DeletedClaims();
  /**
   * Holders whose Granted status this process sent, whatever came back: a write whose reply was lost may have
   * shown the grant though the cache still says otherwise, so such a hold is never given back as unshown.
   */
  private readonly grantSent = new Set<string>();
  private readonly renewer: HoldRenewer;
  /** Lock-delay: when each lapsing hold (its claim ended Lost or LeaseExpired) may be released, this process's clock. */
  private readonly lapseDeadlines = new Map<string, number>();

  constructor(private readonly ctx: OperatorContext) {
    this.renewer = new HoldRenewer({
      clock: ctx.clock,
      enqueueLock: (key) => ctx.enqueueLock(key),
      // The leader's reconcile shows the claim Lost (its lock was queued); a follower does it itself.
      onLapsed: (hold, why) => ctx.leadsNow && !ctx.leadsNow() && showLostAsFollower(ctx, hold, why),
      onError: (hold, err) => ctx.log.debug("renewal failed; retrying", { lock: hold.lockKey, error: err instanceof Error ? err.message : String(err) }),
    });
  }

  async reconcile(key: string): Promise<ReconcileResult | void> {
    try {
      return await this.reconcileLock(key);
    } catch (err) {
      // Another writer changed an object after the cache saw it (writes are conditional): not a
      // failure; look again once the watch has caught up.
      if (statusCode(err) === 409) return { requeue: true };
      throw err;
    }
  }

  private async reconcileLock(key: string): Promise<ReconcileResult | void> {
    const [namespace, name] = key.split("/");
    let lock = this.ctx.caches.locks.get(namespace, name);
    const claims = this.ctx.caches.claims.byIndex(ClaimIndex.byLock, key);
    if (!lock) return this.lockMissing(key, namespace, name, claims);

    let backend: LockBackend;
    try {
      backend = this.backendFor(lock);
    } catch (err) {
      if (!(err instanceof BackendConfigError)) throw err;
      if (lock.metadata.deletionTimestamp) return this.removeFinalizer(lock);
      await this.writeUnready(lock, claims, LockReason.UnknownBackend, `${err.message}; fix spec.backend or the operator config`);
      return;
    }
    const backendKey = backendKeyOf(lock);
    if (lock.metadata.deletionTimestamp) return this.lockDeleted(lock, claims, backend, backendKey);
    const leaseProblem = backend.leaseProblem?.(lock.spec.leaseDurationSeconds ?? LOCK_DEFAULTS.leaseDurationSeconds);
    if (leaseProblem) {
      // Nothing is granted; a deleted claim's hold (granted before the lease changed) goes, then its finalizer.
      for (const claim of claims) if (claim.metadata.deletionTimestamp && claim.metadata.uid) await backend.release(backendKey, claim.metadata.uid);
      return this.writeUnready(lock, claims, LockReason.LeaseUnsupported, leaseProblem, ClaimReason.InvalidSpec);
    }
    await this.ensureFinalizer(lock);
    lock = this.latest(lock);
    // Watch before reading the holds when a claim may have to wait (or other clusters hold), so no
    // release between the read and the watch goes unnoticed; grant() drops the watch when nobody waits.
    const mayWait = claims.some((c) => !c.metadata.deletionTimestamp && c.status?.phase !== "Granted" && !isTerminal(c.status?.phase));
    if (mayWait || lock.status?.holders?.some((h) => h.cluster !== undefined)) this.watchBackend(key, backend, backendKey);

    try {
      return await this.grant(lock, claims, backend, backendKey);
    } catch (err) {
      if (!(err instanceof BackendUnavailableError)) throw err;
      await this.writeUnready(lock, claims, LockReason.BackendUnavailable, `${err.message}; nothing is granted until it answers again`);
      throw err; // rate-limited retry
    }
  }

  /** The heart: decide, release, renew, grant, write status. */
  private async grant(lock: DistributedLock, claims: LockClaim[], backend: LockBackend, backendKey: string): Promise<ReconcileResult> {
    const { clock, clusterName, metrics } = this.ctx;
    const lockKey = `${lock.metadata.namespace}/${lock.metadata.name}`;
    const maxHolders = lock.spec.maxHolders ?? LOCK_DEFAULTS.maxHolders;
    const leaseSeconds = lock.spec.leaseDurationSeconds ?? LOCK_DEFAULTS.leaseDurationSeconds;
    const renewEveryMs = (leaseSeconds * 1000) / 3;
    const nowMs = clock.now();
    const now = new Date(nowMs).toISOString();
    const tracked = (holderId: string): TrackedHold => ({ lockKey, backend, backendKey, holderId, leaseSeconds });

    await forEachConcurrently(claims.filter((c) => !c.metadata.deletionTimestamp), (claim) => this.recordPodUid(claim));
    claims = claims.map((c) => this.latest(c));
    const memo = this.memo(lockKey);
    const record = backend.fencingRecord ?? "revision";
    const reserved = tokenOf(lock.status?.reservedFencingToken);
    // A counter backend's first grant here lifts its counter past the reserve: tokens up to it may have been shown.
    let floor = fencingFloor(lock, claims, memo.handedOut ?? (record === "counter" ? reserved : 0n));
    const { holders: holdList, waiting: entries } = await backend.queueState!(backendKey);
    const holds = new Map(holdList.map((h) => [h.holderId, h]));
    const heartbeatSeenAt = this.heartbeats.sync(lockKey, claims.flatMap(heartbeatOf), nowMs);
    const waitingSeenAt = this.waiting.sync(lockKey, claims.flatMap(waitingOf), nowMs);
    const arrivedAt = this.arrivals.sync(lockKey, claims.flatMap(arrivalOf), nowMs);
    const assessed = new Map(claims.map((c) => {
      const id = c.metadata.uid ?? c.metadata.name;
      const facts = assessClaim(c, this.podState(c), nowMs, heartbeatSeenAt.get(id), waitingSeenAt.get(id));
      facts.validityPassed = (this.renewer.validUntil(facts.id) ?? Infinity) <= nowMs;
      return [facts.id, { claim: c, facts }];
    }));
    const decision = decide({
      maxHolders,
      cluster: clusterName,
      claims: [...assessed.values()].map((a) => a.facts),
      holds: [...holds.values()],
      entries,
    });
    const statuses = new Map<string, LockClaimStatus>();
    // Holds to release in this pass, with the reason metrics give: each goes in the grants below, passed straight to
    // a claim granted now where the backend can (handOff: one write for both), the rest after them.
    const freed: { id: string; reason: string }[] = [];

    // Endings: status first, then the backend release (or, for Lost and LeaseExpired, the lock-delay). A claim
    // being deleted already says it grants nothing (its deletionTimestamp, which holders heed) and is gone in a
    // moment with its Events: no status write and no Event for it, one request each fewer per grant.
    for (const ending of decision.endings) {
      this.grantSent.delete(ending.id);
      const { claim } = assessed.get(ending.id)!;
      statuses.set(ending.id, endedStatus(claim, ending.phase, ending.reason, ending.message, now));
      if (!claim.metadata.deletionTimestamp) {
        await this.writeClaimStatus(claim, statuses.get(ending.id)!);
        this.ctx.events.record(claim, ending.reason === ClaimReason.Lost ? "Warning" : "Normal", ending.reason, ending.message);
      }
      this.renewer.untrack(ending.id);
      if (!ending.release) continue;
      freed.push({ id: ending.id, reason: ending.reason });
      holds.delete(ending.id);
    }
    // Lock-delay: a lapsing hold goes one lease after its claim ended, when its holder has stopped by its own deadline.
    let lapseAt = Infinity;
    for (const orphan of decision.orphans) {
      const fate = await this.orphanFate(lock, holds.get(orphan)!, assessed.has(orphan));
      if (fate === "claimed") continue;
      this.renewer.untrack(orphan);
      const releaseAt = fate === "lapse" ? this.lapsesAt(orphan, nowMs + leaseSeconds * 1000) : nowMs;
      if (releaseAt > nowMs) {
        lapseAt = Math.min(lapseAt, releaseAt);
        continue;
      }
      // A claim seen deleted was released by its deletion, as a claim being deleted is (its ending's reason).
      freed.push({ id: orphan, reason: this.deletedClaims.get(orphan) ? ClaimReason.Released : "Orphaned" });
      this.forgetHold(orphan);
      holds.delete(orphan);
    }
    for (const id of decision.withdraw) await backend.release(backendKey, id);
    for (const id of decision.lapsing) {
      this.renewer.untrack(id);
      const releaseAt = this.lapsesAt(id, nowMs + leaseSeconds * 1000);
      if (releaseAt > nowMs) lapseAt = Math.min(lapseAt, releaseAt);
      else {
        freed.push({ id, reason: "Lapsed" });
        holds.delete(id);
      }
    }
    for (const id of assessed.keys()) if (!holds.has(id) || !decision.lapsing.includes(id)) this.lapseDeadlines.delete(id);

    // Grants below and hand-overs: a hold newly taken for a claim is shown only when its token is above every token
    // this lock handed out; else it is given back, nothing is granted, and the lock says the backend lost its data.
    let regression: string | undefined;
    const acquired: string[] = [];
    const waiting: string[] = [];
    const accept = async (id: string, hold: Hold, confirmedAt: number): Promise<void> => {
      const { claim } = assessed.get(id)!;
      if (BigInt(hold.fencingToken) <= floor) {
        await backend.release(backendKey, id);
        regression = `backend ${backend.name} issued fencing token ${hold.fencingToken}, not above the highest this lock handed out `
          + `(${floor}): it lost data (restarted empty, restored, or failed over); nothing is granted until its tokens pass ${floor}`;
        holds.delete(id);
        waiting.push(id);
        return;
      }
      floor = BigInt(hold.fencingToken);
      memo.handedOut = floor;
      acquired.push(id);
      holds.set(id, hold);
      this.renewer.track(tracked(id), confirmedAt);
      metrics?.granted(lockKey, backend.name, claim.metadata.creationTimestamp, clock.now());
      // No Event for a grant: the claim's status and Granted condition say it, and an Event per grant would be
      // the API server's busiest write after the status itself. Events are for what needs attention.
      statuses.set(id, grantedStatus(claim, hold, lock.metadata.name, now));
    };

    // Keep: renew holds not confirmed by this process within a third of their lease (the renewer normally did);
    // a hold gone meanwhile is Lost. A hold this process never took for a claim not yet Granted was handed to the
    // claim's queue entry by the backend (a holder's release passes its slot to the queue's head): confirmed by the
    // renewal, it is a grant.
    let lostNow = false;
    for (const id of decision.keep) {
      const { claim } = assessed.get(id)!;
      const validUntil = this.renewer.validUntil(id);
      if (validUntil === undefined || validUntil - nowMs <= (leaseSeconds * 1000 * 2) / 3 - validityMarginMs(leaseSeconds)) {
        const startedAt = clock.now();
        const renewed = await backend.renew(backendKey, id, leaseSeconds);
        if (!renewed) {
          lostNow = true;
          holds.delete(id);
          this.renewer.untrack(id);
          metrics?.released(lockKey, backend.name, ClaimReason.Lost, nowMs);
          const message = "the backend hold expired before the operator could renew it; stop work guarded by this claim's fencing token and create a new claim";
          statuses.set(id, endedStatus(claim, "Lost", ClaimReason.Lost, message, now));
          this.ctx.events.record(claim, "Warning", ClaimReason.Lost, message);
          continue;
        }
        if (validUntil === undefined && claim.status?.phase !== "Granted") {
          await accept(id, renewed, startedAt);
          continue;
        }
        holds.set(id, renewed);
        this.renewer.track(tracked(id), startedAt);
      }
      statuses.set(id, grantedStatus(claim, holds.get(id)!, lock.metadata.name, now));
    }

    // Grants, in queue order: the front waits in the backend's queue (rule 7 of decide), which serves clusters in
    // the order their entries joined; each call takes the slot when the entry's turn has come, or refreshes it.
    const released = (from: { id: string; reason: string }) => metrics?.released(lockKey, backend.name, from.reason, clock.now());
    for (const [index, id] of decision.queue.entries()) {
      const { claim } = assessed.get(id)!;
      const startedAt = clock.now();
      let hold: Hold | undefined;
      if (!lostNow && !regression && index < decision.enqueue) {
        const request: AcquireRequest = {
          key: backendKey, maxHolders, leaseDurationSeconds: leaseSeconds, holderId: id, claim: claim.metadata.name,
          holderIdentity: claim.spec.podName ?? claim.metadata.name, cluster: clusterName, fencingFloor: floor.toString(), wait: true,
        };
        const from = freed.shift();
        const handed = from ? await handOff(backend, from.id, request) : { released: false, hold: await backend.tryAcquire(request) };
        if (from && handed.released) released(from);
        hold = handed.hold;
      }
      if (hold) await accept(id, hold, Math.min(startedAt, hold.confirmedAt ?? startedAt));
      else waiting.push(id);
    }
    for (const from of freed.splice(0)) if (await backend.release(backendKey, from.id)) released(from);
    // Places: a claim's first place is written once it has waited FIRST_PLACE_DELAY_MS (one granted sooner costs
    // no Pending write); moves wait for the lock's position refresh (at most one per POSITION_REFRESH_MS), so a
    // moving queue is not O(k) writes per grant, and a claim granted within that time after it moved up costs no
    // write for the move.
    const refreshIn = memo.positionsAt + POSITION_REFRESH_MS - nowMs;
    let positionsDeferred = false;
    let firstPlaceIn = Infinity;
    waiting.forEach((id, index) => {
      const { claim } = assessed.get(id)!;
      const shown = claim.status?.phase === "Pending" ? claim.status.position : undefined;
      const moved = shown !== undefined && shown !== index + 1;
      const arrivalWait = (arrivedAt.get(id) ?? -Infinity) + FIRST_PLACE_DELAY_MS - nowMs;
      if (moved && refreshIn > 0) positionsDeferred = true;
      else if (arrivalWait > 0) firstPlaceIn = Math.min(firstPlaceIn, arrivalWait);
      else {
        statuses.set(id, waitingStatus(claim, index + 1, lock.metadata.name, now));
        if (moved) memo.positionsAt = nowMs;
      }
    });
    for (const { claim, facts } of assessed.values()) {
      if (facts.blocked) statuses.set(facts.id, blockedStatus(claim, ClaimReason.InvalidSpec, facts.blockedMessage!, now));
    }

    // The lock's status first when its fencing mark must grow: the mark must cover every token a claim is about to
    // show, since a claim may be deleted (its token gone with it) the moment it shows one, and a backend that lost its
    // data must not hand that token out again. A counter backend's mark is reserved FENCING_RESERVE ahead, so it
    // grows once per that many grants; an API-store backend's guards nothing (see LockBackend.fencingRecord). A
    // failed write here writes no claim; the pass is retried. Any other change of holders or counts is for people:
    // written at most once per POSITION_REFRESH_MS (see writeLockStatus), while claims' statuses go out at once.
    // Renewals are recorded when a holder's recorded renewTime is STATUS_REPORT_MS old, in the lock's turn (reports).
    const markDue = record === "counter" ? floor > reserved : record === "revision" && floor > tokenOf(lock.status?.highestFencingToken);
    const transitions = (lock.status?.leaseTransitions ?? 0) + memo.transitionsUnwritten + acquired.length;
    const reportDue = [...holds.values()].some((h) => this.reportDue(h, lock.status?.holders, nowMs));
    if (!reportDue) this.reports.forget(lockKey);
    const reportIn = reportDue ? this.reports.wait(lockKey, nowMs) : Infinity;
    const lockWrite = await this.writeLockStatus(lock, {
      holders: [...holds.values()].map((h) => this.holderEntry(h, lock.status?.holders, nowMs, reportIn === 0)),
      holderNames: [...holds.values()].map((h) => h.holderIdentity).join(","), // "" for none: an absent field would stay as last written
      holderCount: holds.size,
      waiting: waiting.length,
      leaseTransitions: transitions,
      highestFencingToken: floor > 0n ? floor.toString() : undefined,
      ...(markDue && record === "counter" && { reservedFencingToken: (floor + FENCING_RESERVE).toString() }),
      ready: regression
        ? { status: "False", reason: LockReason.FencingTokenRegressed, message: regression }
        : { status: "True", reason: LockReason.BackendReady, message: `backend ${backend.name} reachable` },
      available: holds.size < maxHolders,
      now,
    }, markDue || regression !== undefined);
    memo.transitionsUnwritten = typeof lockWrite === "number" ? transitions - (lock.status?.leaseTransitions ?? 0) : 0;
    if (lockWrite === "gone") {
      // The lock is gone without its deletion being reconciled (its finalizer removed by other hands): nothing visits
      // its key again, so the holds taken in this pass, shown to no one, go now.
      for (const id of acquired) {
        this.renewer.untrack(id);
        await backend.release(backendKey, id);
      }
      return {};
    }

    // Claim writes that fail (a conflict) do not stop the others; the first failure is rethrown after them, and
    // the pass is retried.
    const ended = new Set(decision.endings.map((e) => e.id));
    const failures: unknown[] = [];
    await forEachConcurrently([...statuses].filter(([id]) => !ended.has(id)), async ([id, status]) => {
      const { claim } = assessed.get(id)!;
      try {
        if (status.phase === "Granted" && !((this.renewer.validUntil(id) ?? -Infinity) > clock.now())) {
          // Paused or starved between the acquire and this write past the hold's validity: the backend may have
          // let it go and granted the slot elsewhere, so the claim must not be shown Granted now. A hold never
          // shown to anyone is given back at once; a shown one lapses (the next pass shows its claim Lost). "Never
          // shown" needs more than the cache's word: a Granted write whose reply was lost (an API server going
          // down) may have shown it, so a hold whose Granted status was ever sent is not given back here.
          if (claim.status?.phase !== "Granted" && !this.grantSent.has(id)) {
            this.renewer.untrack(id);
            await backend.release(backendKey, id);
          }
          throw new Error(`the hold of claim ${claim.metadata.name} was no longer certainly valid when its grant was to be written`);
        }
        if (status.phase === "Granted") this.grantSent.add(id);
        if (!(await this.writeClaimStatus(claim, status))) {
          // The claim is gone (deleted while this pass ran, say while its acquire was in flight): no claim of that name
          // exists and its UID never comes back, so what it holds or queues for goes now, as on its deletion, without
          // waiting for the watch's DELETE event. Nothing here lapses: these statuses end no claim but Lost after a
          // renewal found the hold already gone.
          this.renewer.untrack(id);
          this.grantSent.delete(id);
          if (await backend.release(backendKey, id)) metrics?.released(lockKey, backend.name, ClaimReason.Released, clock.now());
          holds.delete(id);
        }
      } catch (err) {
        failures.push(err);
      }
    });

    // A claim that an earlier version gave the release finalizer keeps it while its hold lapses (lock-delay).
    await forEachConcurrently([...assessed.values()].filter(({ claim, facts }) => claim.metadata.deletionTimestamp && !holds.has(facts.id)),
      ({ claim }) => this.removeFinalizer(claim).catch((err) => void failures.push(err)));
    metrics?.lockState(lockKey, holds.size, waiting.length);
    // The backend watch wakes waiters when a hold goes elsewhere, and keeps other clusters' holders in the
    // status fresh. With neither, it would only cost (a Redis watch polls): this operator's own holds are
    // checked by the renewer, whose next renewal finds a vanished hold.
    if (waiting.length > 0 || [...holds.values()].some((h) => h.cluster !== clusterName)) this.watchBackend(lockKey, backend, backendKey);
    else this.stopBackendWatch(lockKey);
    if (failures.length > 0) throw failures[0];

    const deadlines = [...assessed.values()].map((a) => a.facts.deadline).filter((d): d is number => d !== undefined);
    // Waiting claims: look again every third of a lease (a foreign hold may expire without any event).
    // Holds alone: only to record renewals in the status now and then (the renewer renews them).
    const next = Math.min(waiting.length > 0 ? renewEveryMs : holds.size > 0 ? STATUS_REPORT_MS : Infinity, reportIn || Infinity,
      positionsDeferred ? refreshIn : Infinity, typeof lockWrite === "number" ? lockWrite : Infinity, firstPlaceIn, lapseAt - nowMs + 10,
      ...deadlines.map((d) => d - nowMs + 10));
    return Number.isFinite(next) ? { requeueAfterMs: Math.max(10, Math.round(next)) } : {};
  }

  /**
   * Every replica, leader or not, renews the holds of the claims its cache shows Granted (see HoldRenewer): a
   * standby keeps them alive through the leader's crash, and a new leader takes over with their validity known.
   * Called for every claim the cache adds or changes; a claim that is no longer Granted stops being renewed here
   * (the leader's reconcile decides what becomes of its hold). First renewals of holds found at start-up are
   * spread over a few seconds.
   */
  /** Resolves once the holds followed so far have had their first renewal here (a starting replica is ready then). */
  firstRenewals(): Promise<void> {
    return this.renewer.firstAttempts();
  }

  followClaim(claim: LockClaim, deleted = false): void {
    const id = claim.metadata.uid;
    if (!id) return;
    if (deleted) this.grantSent.delete(id);
    if (deleted) {
      const lapses = assessClaim(claim, undefined, this.ctx.clock.now()).lapses === true;
      this.deletedClaims.note(id, { lapses, lockKey: `${claim.metadata.namespace}/${claim.spec.lockName}` }, this.ctx.clock.now());
    }
    const lock = this.ctx.caches.locks.get(claim.metadata.namespace, claim.spec.lockName);
    if (deleted || claim.status?.phase !== "Granted" || !lock || lock.metadata.deletionTimestamp) {
      if (deleted || isTerminal(claim.status?.phase)) this.renewer.untrack(id);
      return;
    }
    let backend: LockBackend;
    try {
      backend = this.backendFor(lock);
    } catch {
      return; // an unknown backend: the lock's reconcile says so
    }
    const leaseSeconds = lock.spec.leaseDurationSeconds ?? LOCK_DEFAULTS.leaseDurationSeconds;
    const lockKey = `${lock.metadata.namespace}/${lock.metadata.name}`;
    const spreadMs = Math.random() * Math.min((leaseSeconds * 1000) / 6, RESUME_SPREAD_MS);
    this.renewer.track({ lockKey, backend, backendKey: backendKeyOf(lock), holderId: id, leaseSeconds }, undefined, spreadMs);
  }

  /** When a lapsing hold may be released: remembered from the first time it was seen lapsing (`fresh` then). */
  private lapsesAt(holderId: string, fresh: number): number {
    const at = this.lapseDeadlines.get(holderId) ?? fresh;
    this.lapseDeadlines.set(holderId, at);
    return at;
  }

  /**
   * What becomes of a hold of this cluster that no live claim under this lock owns. It goes only on evidence:
   * its claim is here and ended for good, this process saw the claim deleted (a UID never comes back), or a live
   * read from the API server shows that the claim is gone. A cache miss alone is no evidence (a new leader's cache
   * may lag, and another lock may share the backend key). It lapses instead of going at once when its claim had
   * ended Lost or LeaseExpired (lock-delay, remembered from before the claim went, or read from the deleted claim).
   */
  private async orphanFate(lock: DistributedLock, hold: HolderInfo, claimed: boolean): Promise<"release" | "lapse" | "claimed"> {
    if (claimed) return "release"; // its claim is here, in a terminal phase whose hold goes at once
    if (this.ctx.caches.claims.byIndex(ClaimIndex.byUid, hold.holderId).length > 0) return "claimed";
    if (this.lapseDeadlines.has(hold.holderId)) return "lapse";
    const deleted = this.deletedClaims.get(hold.holderId);
    if (deleted) return deleted.lapses ? "lapse" : "release";
    const live = await this.ctx.client.getClaim(lock.metadata.namespace!, hold.claim).catch(ignoreNotFound);
    return live?.metadata.uid === hold.holderId ? "claimed" : "release";
  }

  /**
   * The lock's backend as reconciles use it; throws BackendConfigError for an unknown name. One wrapper per backend:
   * the renewer keeps the one a hold was taken with, so a wrapper per pass would be one per hold.
   */
  private backendFor(lock: DistributedLock): LockBackend {
    const backend = this.ctx.backends.get(lock.spec.backend ?? this.ctx.defaultBackend);
    let wrapped = this.guarded.get(backend);
    if (!wrapped) this.guarded.set(backend, (wrapped = failuresAsUnavailable(backend, () => this.assertLeading())));
    return wrapped;
  }

  /** The lock's status records this holder, and its recorded renewTime is STATUS_REPORT_MS old: a report is due. */
  private reportDue(hold: Hold, shown: LockHolder[] | undefined, nowMs: number): boolean {
    const recorded = this.recordedHolder(hold, shown);
    return recorded !== undefined && nowMs - Date.parse(recorded.renewTime) >= STATUS_REPORT_MS && recorded.renewTime !== hold.renewTime;
  }

  /**
   * A holder as the lock's status shows it. A holder already recorded keeps its recorded renewTime unless `report`
   * (its report's turn has come: see reportDue and ReportSchedule).
   */
  private holderEntry(hold: Hold, shown: LockHolder[] | undefined, nowMs: number, report: boolean): LockHolder {
    const recorded = this.recordedHolder(hold, shown);
    const keep = recorded !== undefined && Date.parse(recorded.renewTime) <= Date.parse(hold.renewTime)
      && !(report && nowMs - Date.parse(recorded.renewTime) >= STATUS_REPORT_MS);
    const entry: LockHolder = {
      claim: hold.claim,
      holderIdentity: hold.holderIdentity,
      fencingToken: hold.fencingToken,
      acquireTime: hold.acquireTime,
      renewTime: keep ? recorded.renewTime : hold.renewTime,
    };
    if (hold.cluster !== this.ctx.clusterName) entry.cluster = hold.cluster;
    return entry;
  }

  private recordedHolder(hold: Hold, shown: LockHolder[] | undefined): LockHolder | undefined {
    const cluster = hold.cluster === this.ctx.clusterName ? undefined : hold.cluster;
    return shown?.find((h) => h.claim === hold.claim && h.fencingToken === hold.fencingToken && h.cluster === cluster);
  }

  /**
   * The lock is being deleted: its claims are told (Released, LockNotFound), then every hold and queue entry this
   * cluster has on its key for a claim of this lock, or for a claim that is gone, is released, lapsing or not; then
   * its finalizer goes. Nothing visits the key once the lock is gone, so whatever is left here stays for good:
   * - the claims in the cache, listed or not (release is owner-checked and idempotent; an acquire cut short leaves a
   *   hold the backend may not list);
   * - the claims of this lock seen deleted, listed or not: claims carry no finalizer, so one deleted just before its
   *   lock is already out of the cache, and the pass its deletion queued may not have come before this one;
   * - listed holds and entries of this cluster whose claim is gone on the same evidence as any orphan's (a claim
   *   deleted while no replica watched: a live read). A live claim of another lock sharing the key keeps its hold.
   */
  private async lockDeleted(lock: DistributedLock, claims: LockClaim[], backend: LockBackend, backendKey: string): Promise<void> {
    const lockKey = `${lock.metadata.namespace}/${lock.metadata.name}`;
    const now = new Date(this.ctx.clock.now()).toISOString();
    const message = `lock ${lock.metadata.name} was deleted; its holds were released`;
    for (const claim of claims) {
      if (claim.status?.phase === "Pending" || claim.status?.phase === "Granted" || !claim.status?.phase) {
        await this.writeClaimStatus(claim, endedStatus(claim, "Released", ClaimReason.LockNotFound, message, now));
      }
    }
    const release = (holderId: string, reason: string) => this.releaseHold(backend, backendKey, lockKey, holderId, reason);
    for (const claim of claims) if (claim.metadata.uid) await release(claim.metadata.uid, ClaimReason.LockNotFound);
    for (const uid of this.deletedClaims.forLock(lockKey)) await release(uid, ClaimReason.Released);
    const { holders, waiting } = await backend.queueState!(backendKey);
    for (const hold of [...holders, ...waiting]) {
      if (hold.cluster !== this.ctx.clusterName && !hold.ownSession) continue;
      if ((await this.orphanFate(lock, hold, false)) !== "claimed") await release(hold.holderId, "Orphaned");
    }
    for (const claim of claims) if (claim.metadata.deletionTimestamp) await this.removeFinalizer(claim);
    this.forgetLock(lockKey);
    this.ctx.metrics?.lockGone(lockKey);
    await this.forgetInBackend(lock, backend, backendKey);
    await this.removeFinalizer(lock);
  }

  /** Releases a hold that no claim keeps, and forgets everything this process remembered of its holder. */
  private async releaseHold(backend: LockBackend, backendKey: string, lockKey: string, holderId: string, reason: string): Promise<void> {
    this.forgetHold(holderId);
    if (await backend.release(backendKey, holderId)) this.ctx.metrics?.released(lockKey, backend.name, reason, this.ctx.clock.now());
  }

  /** What this process keeps about a hold that goes now: nothing of it stays. */
  private forgetHold(holderId: string): void {
    this.renewer.untrack(holderId);
    this.deletedClaims.forget(holderId);
    this.lapseDeadlines.delete(holderId);
    this.grantSent.delete(holderId);
  }

  /**
   * The deleted lock's per-key state in the backend (counter, lock node, rows) goes if nothing of any cluster
   * holds or waits there (LockBackend.forget). A failure never keeps the lock: leftover state is harmless.
   */
  private async forgetInBackend(lock: DistributedLock, backend: LockBackend, backendKey: string): Promise<void> {
    if (!backend.forget) return;
    const fields = { lock: `${lock.metadata.namespace}/${lock.metadata.name}`, backend: backend.name, key: backendKey };
    try {
      const removed = await backend.forget(backendKey);
      this.ctx.log.debug(removed ? "removed the deleted lock's backend state" : "kept the deleted lock's backend state (in use, or none)", fields);
    } catch (err) {
      if (err instanceof NotLeadingError) throw err;
      this.ctx.log.info("could not remove the deleted lock's backend state; it stays", { ...fields, error: err instanceof Error ? err.message : String(err) });
    }
  }

  /**
   * No such lock in the cache: claims naming it wait with LockNotFound (once a live read confirms the lock is
   * missing; when it exists, its watch event is on the way and the lock is looked at again); deleted ones go.
   */
  private async lockMissing(key: string, namespace: string, name: string, claims: LockClaim[]): Promise<ReconcileResult | void> {
    const toTell = claims.filter((c) => !c.metadata.deletionTimestamp && (c.status?.phase === undefined || c.status.phase === "Pending")
      && c.status?.conditions?.find((x) => x.type === ConditionType.Granted)?.reason !== ClaimReason.LockNotFound);
    if (toTell.length > 0 && (await this.ctx.client.lockExists(namespace, name))) return { requeueAfterMs: LOCK_ARRIVING_MS };
    this.forgetLock(key);
    this.ctx.metrics?.lockGone(key);
    const now = new Date(this.ctx.clock.now()).toISOString();
    for (const claim of claims) {
      if (claim.metadata.deletionTimestamp) await this.removeFinalizer(claim);
      else if (claim.status?.phase === undefined || claim.status.phase === "Pending") {
        await this.writeClaimStatus(claim, blockedStatus(claim, ClaimReason.LockNotFound,
          `DistributedLock ${name} not found in namespace ${claim.metadata.namespace}; create it or fix spec.lockName (the claim waits for it)`, now));
      }
    }
  }

  /** The lock cannot work (unknown backend, backend down): say so on the lock and on its waiting claims. */
  private async writeUnready(lock: DistributedLock, claims: LockClaim[], reason: string, message: string, claimReason: ClaimReason = ClaimReason.BackendUnavailable): Promise<void> {
    const now = new Date(this.ctx.clock.now()).toISOString();
    // The cache, not the objects this reconcile started from: it may have written statuses already.
    lock = this.latest(lock);
    const nowMs = this.ctx.clock.now();
    for (const claim of claims.map((c) => this.latest(c))) {
      if (claim.metadata.deletionTimestamp && (reason === LockReason.UnknownBackend || reason === LockReason.LeaseUnsupported)) await this.removeFinalizer(claim);
      else if (reason === LockReason.BackendUnavailable && claim.status?.phase === "Granted" && !((this.renewer.validUntil(claim.metadata.uid!) ?? -Infinity) > nowMs)) {
        // Past its validity deadline (or never confirmed by this process): the backend may already have let the hold
        // go, so the claim must not show Granted any longer. The hold, if it is still there, lapses (lock-delay).
        const lostMessage = `the operator could not confirm the backend hold within its lease (${message}); `
          + "stop work guarded by this claim's fencing token and create a new claim";
        await this.writeClaimStatus(claim, endedStatus(claim, "Lost", ClaimReason.Lost, lostMessage, now));
        // Only once Lost is written: until then the renewer's passed deadline keeps the hold from being revived.
        this.renewer.untrack(claim.metadata.uid!);
        this.ctx.events.record(claim, "Warning", ClaimReason.Lost, lostMessage);
      } else if (claim.status?.phase === undefined || claim.status.phase === "Pending" || claim.status.phase === "Granted") {
        await this.writeClaimStatus(claim, blockedStatus(claim, claimReason, message, now));
      }
    }
    await this.writeLockStatus(lock, {
      ...lock.status,
      ready: { status: "False", reason, message },
      available: false,
      now,
    });
  }

  /**
   * Writes the lock's status if it changed: "gone" when the lock is (HTTP 404). Unless `urgent`, a change that leaves
   * the conditions as they were (holders, counts, the fencing mark where it guards nothing) is not written within
   * POSITION_REFRESH_MS of the last write: claims arriving, granted or leaving the queue each change it, and only
   * people read it. Then the milliseconds until it may be, for the caller to look again.
   */
  private async writeLockStatus(
    lock: DistributedLock,
    next: Omit<DistributedLockStatus, "conditions"> & { ready: { status: "True" | "False"; reason: string; message: string }; available: boolean; now: string },
    urgent = true,
  ): Promise<"written" | "unchanged" | "gone" | number> {
    const { ready, available, now, ...fields } = next;
    const generation = lock.metadata.generation;
    let conditions = setCondition(lock.status?.conditions, { type: ConditionType.Ready, ...ready, observedGeneration: generation }, now);
    conditions = setCondition(conditions, {
      type: ConditionType.Available,
      status: available ? "True" : "False",
      reason: available ? LockReason.SlotFree : ready.status === "True" ? LockReason.AllSlotsHeld : ready.reason,
      message: available ? "a slot is free" : ready.status === "True" ? "every slot is held; new claims wait" : ready.message,
      observedGeneration: generation,
    }, now);
    const { conditions: _c, ...previous } = lock.status ?? {};
    const status: DistributedLockStatus = { ...previous, ...fields, observedGeneration: generation, conditions };
    if (sameJson(status, lock.status)) return "unchanged";
    const lockKey = `${lock.metadata.namespace}/${lock.metadata.name}`;
    const nowMs = this.ctx.clock.now();
    const writableIn = this.memo(lockKey).statusAt + POSITION_REFRESH_MS - nowMs;
    if (!urgent && writableIn > 0 && sameJson(conditions, lock.status?.conditions) && generation === lock.status?.observedGeneration) return writableIn;
    this.assertLeading();
    const written = await this.ctx.client.patchStatus(LOCK_PLURAL, lock.metadata, lock.status, status).catch(ignoreNotFound);
    if (!written) return "gone";
    this.memo(lockKey).statusAt = nowMs;
    this.ctx.caches.locks.observe(written as DistributedLock);
    return "written";
  }

  /**
   * Writes the claim's status if it changed; false when the claim is gone (HTTP 404: the write names the claim and
   * the resourceVersion read, so a claim made again under the name meets a 409 instead, and the one read is gone).
   */
  private async writeClaimStatus(claim: LockClaim, status: LockClaimStatus): Promise<boolean> {
    if (sameJson(status, claim.status)) return true;
    this.assertLeading();
    const written = await this.ctx.client.patchStatus(CLAIM_PLURAL, claim.metadata, claim.status, status).catch(ignoreNotFound);
    if (!written) return false;
    this.ctx.caches.claims.observe(written as LockClaim);
    if (status.phase === "Lost" && claim.status?.phase !== "Lost") this.ctx.metrics?.claimLost();
    return true;
  }

  /** Locks carry the release finalizer (see lockDeleted); claims none. */
  private async ensureFinalizer(lock: DistributedLock): Promise<void> {
    const finalizers = lock.metadata.finalizers ?? [];
    if (finalizers.includes(RELEASE_FINALIZER)) return;
    this.assertLeading();
    const written = await this.ctx.client.setFinalizers(LOCK_PLURAL, lock.metadata, [...finalizers, RELEASE_FINALIZER]).catch(ignoreNotFound);
    if (written) this.observe(LOCK_PLURAL, written);
  }

  /**
   * Every write and backend change first checks that this operator still provably leads: a leader
   * that was paused past its renew deadline must not act on its stale cache before it notices.
   */
  private assertLeading(): void {
    if (this.ctx.leadsNow && !this.ctx.leadsNow()) throw new NotLeadingError();
  }

  /** Pins a claim to its pod's UID the first time both are seen (see claimPodUid). */
  private async recordPodUid(claim: LockClaim): Promise<void> {
    if (!claim.spec.podName || claimPodUid(claim) || isTerminal(claim.status?.phase)) return;
    const pod = this.ctx.caches.pods.get(claim.metadata.namespace, claim.spec.podName);
    if (!pod?.metadata?.uid) return;
    this.assertLeading();
    const written = await this.ctx.client.annotate(CLAIM_PLURAL, claim.metadata, { [POD_UID_ANNOTATION]: pod.metadata.uid }).catch(ignoreNotFound);
    if (written) this.ctx.caches.claims.observe(written as LockClaim);
  }

  private async removeFinalizer(stale: DistributedLock | LockClaim): Promise<void> {
    const obj = this.latest(stale);
    const finalizers = obj.metadata.finalizers ?? [];
    if (!finalizers.includes(RELEASE_FINALIZER)) return;
    this.assertLeading();
    const plural = obj.kind === "DistributedLock" ? LOCK_PLURAL : CLAIM_PLURAL;
    const written = await this.ctx.client.setFinalizers(plural, obj.metadata, finalizers.filter((f) => f !== RELEASE_FINALIZER)).catch(ignoreNotFound);
    // Cached at once: a reconcile before the watch tells of the deletion must not ask again (an HTTP 404 each).
    if (written) this.observe(plural, written);
  }

  /** The cached object, which includes this reconciler's own writes (informer `observe`). */
  private latest<T extends DistributedLock | LockClaim>(obj: T): T {
    const cache = (obj.kind === "DistributedLock" ? this.ctx.caches.locks : this.ctx.caches.claims) as { get(ns: string, name: string): unknown };
    return (cache.get(obj.metadata.namespace, obj.metadata.name) as T | undefined) ?? obj;
  }

  private observe(plural: string, obj: unknown): void {
    if (plural === LOCK_PLURAL) this.ctx.caches.locks.observe(obj as DistributedLock);
    else this.ctx.caches.claims.observe(obj as LockClaim);
  }

  private podState(claim: LockClaim): PodState | undefined {
    if (!claim.spec.podName) return undefined;
    const pod = this.ctx.caches.pods.get(claim.metadata.namespace, claim.spec.podName);
    return pod ? { exists: true, phase: pod.status?.phase, uid: pod.metadata?.uid } : { exists: false };
  }

  private watchBackend(lockKey: string, backend: LockBackend, backendKey: string): void {
    const current = this.watches.get(lockKey);
    if (current?.backendKey === backendKey) return;
    current?.stop();
    this.watches.set(lockKey, { backendKey, stop: backend.watch(backendKey, () => this.ctx.enqueueLock(lockKey)) });
  }

  private stopBackendWatch(lockKey: string): void {
    this.watches.get(lockKey)?.stop();
    this.watches.delete(lockKey);
  }

  /** What this process remembers of the lock (nothing yet, for one it has not reconciled). */
  private memo(lockKey: string): LockMemory {
    let record = this.memory.get(lockKey);
    if (!record) this.memory.set(lockKey, (record = { statusAt: -Infinity, positionsAt: -Infinity, transitionsUnwritten: 0 }));
    return record;
  }

  /** The lock is gone: nothing of it is watched or remembered. */
  private forgetLock(lockKey: string): void {
    this.stopBackendWatch(lockKey);
    this.memory.delete(lockKey);
    this.heartbeats.forget(lockKey);
    this.reports.forget(lockKey);
    this.waiting.forget(lockKey);
    this.arrivals.forget(lockKey);
  }

  stopAll(): void {
    this.renewer.stopAll();
    for (const key of [...this.watches.keys()]) this.forgetLock(key);
  }
}

/** A lock missing from the cache that a live read found: looked at again after this, if its watch event has not come. */
const LOCK_ARRIVING_MS = 500;

/** How long at most the first renewals of the holds found at start-up are spread (see followClaim). */
const RESUME_SPREAD_MS = 5000;

/**
 * The fencing high-water mark: the highest token this cluster ever showed on the lock, from the lock's status, every
 * claim of it that shows one, and `known` (what this process handed out, or the reserve before it has). New grants
 * must get a larger token.
 */
function fencingFloor(lock: DistributedLock, claims: LockClaim[], known: bigint): bigint {
  return [lock.status?.highestFencingToken, ...claims.map((c) => c.status?.fencingToken)].map(tokenOf).reduce((a, b) => (b > a ? b : a), known);
}

/** A decimal token as a bigint; 0 for none (or anything else). */
const tokenOf = (token: string | undefined): bigint => (token && /^[0-9]+$/.test(token) ? BigInt(token) : 0n);

/**
 * How far a counter backend's fencing mark is recorded ahead of the tokens handed out (see LockBackend.fencingRecord):
 * one lock status write per this many grants. A restarted operator's first grant on the lock skips at most this many.
 */
const FENCING_RESERVE = 1000n;

/** What this process remembers of one lock. */
interface LockMemory {
  /** When this process last wrote its status (display changes wait POSITION_REFRESH_MS after it). */
  statusAt: number;
  /** When it last rewrote waiting claims' moved places (at most one such round per POSITION_REFRESH_MS). */
  positionsAt: number;
  /** The highest token this process handed out on it (a deferred status write may not show it yet). */
  handedOut?: bigint;
  /** Grants made in passes whose status write was put off: leaseTransitions not yet written. */
  transitionsUnwritten: number;
}

const backendKeyOf = (lock: DistributedLock) => `${lock.metadata.namespace}/${lock.spec.key ?? lock.metadata.name}`;

/** A Granted heartbeat claim's current heartbeat, as [id, version] for ObservedVersions; none for other claims. */
const heartbeatOf = (claim: LockClaim): [string, string][] => claim.status?.phase === "Granted" && claim.spec.leaseDurationSeconds
  ? [[claim.metadata.uid ?? claim.metadata.name, `${claim.spec.renewTime ?? ""} ${claim.status.acquireTime ?? ""}`]]
  : [];

/** A claim with no status yet, as [id, version] for ObservedVersions (see FIRST_PLACE_DELAY_MS). */
const arrivalOf = (claim: LockClaim): [string, string][] => (claim.status?.phase ? [] : [[claim.metadata.uid ?? claim.metadata.name, "new"]]);

/** A waiting claim with a waitTimeoutSeconds, as [id, version] for ObservedVersions (one version: it is seen once). */
const waitingOf = (claim: LockClaim): [string, string][] =>
  claim.spec.waitTimeoutSeconds && claim.status?.phase !== "Granted" && !isTerminal(claim.status?.phase)
  ? [[claim.metadata.uid ?? claim.metadata.name, "waiting"]]
  : [];

/** Thrown instead of a write when this operator no longer provably leads; the reconcile retries later. */
export class NotLeadingError extends Error {
  override readonly name = "NotLeadingError";
  constructor() {
    super("not provably leading (the leader lease was not renewed within the renew deadline): write skipped");
  }
}

/**
 * Any failure of a backend call (credentials refused, a protocol error) makes the backend unusable for
 * this lock, as an outage does: the lock says so in Ready=False and the reconcile retries with backoff.
 * `beforeChange` runs before every call that changes holds (the leadership check).
 */
function failuresAsUnavailable(backend: LockBackend, beforeChange: () => void): LockBackend {
  const guard = <A extends unknown[], R>(call: (...args: A) => Promise<R>, changes = true) => async (...args: A): Promise<R> => {
    if (changes) beforeChange();
    try {
      return await call.apply(backend, args);
    } catch (err) {
      if (err instanceof BackendUnavailableError) throw err;
      throw new BackendUnavailableError(backend.name, err instanceof Error ? err.message : String(err), { cause: err });
    }
  };
  return {
    name: backend.name,
    expiresOnServer: backend.expiresOnServer,
    fencingRecord: backend.fencingRecord,
    tryAcquire: guard(backend.tryAcquire),
    // Renewing needs no leadership: it only extends a hold that exists, owner-checked (see HoldRenewer).
    renew: guard(backend.renew, false),
    release: guard(backend.release),
    holders: guard(backend.holders, false),
    waiting: guard(backend.waiting, false),
    queueState: guard((key: string) => queueState(backend, key), false),
    ...(backend.handOff && { handOff: guard(backend.handOff) }),
    ...(backend.forget && { forget: guard(backend.forget) }),
    watch: (key, onChange, waiter) => backend.watch(key, onChange, waiter),
    close: () => backend.close(),
    leaseProblem: (seconds) => backend.leaseProblem?.(seconds),
  };
}

/** API writes for different objects, a few at a time. */
async function forEachConcurrently<T>(items: T[], write: (item: T) => Promise<void>, limit = 8): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await write(items[next++]);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

function ignoreNotFound(err: unknown): undefined {
  if (isNotFound(err)) return undefined;
  throw err;
}

