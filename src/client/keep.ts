/**
 * Keeping a grant, as `kubelock run` and `kubelock hold` do, from the same pieces: the heartbeat
 * (cli/heartbeat.ts) renews spec.renewTime every third of the lease, the holder's own deadline
 * (cli/hold-deadline.ts) counts from the start of the last renewal the API server confirmed, and a watch
 * of the claim (cli/claim-watch.ts) hears at once when it leaves Granted or is deleted. Whichever tells
 * first that the grant is over calls `lost` once; renewals and the watch stop then.
 */
import { performance } from "node:perf_hooks";
import { watchClaim } from "../cli/claim-watch";
import type { Cluster } from "../cli/common";
import { formatDuration } from "../cli/duration";
import { grantEnded, startHeartbeat, type Heartbeat } from "../cli/heartbeat";
import { driftMarginMs, holdDeadline, type HoldDeadline } from "../cli/hold-deadline";

export interface KeepOptions {
  /** The cluster whose requests give up within a renewal interval. */
  cluster: Cluster;
  claimName: string;
  /** Heartbeat mode: the claim's lease. Without it, nothing is renewed and only the watch can tell of a loss. */
  leaseMs?: number;
  /** The grant is over (called once, never after `stop()`). */
  lost(why: string): void;
  /** A renewal failed for a reason that may pass, or the watch could not go on; the grant is still held. */
  trouble(message: string): void;
}

export interface GrantKeeper {
  /**
   * Resolves once a first renewal was confirmed (at once without a lease): only from then on is the
   * holder's deadline known. Never rejects; a loss meanwhile calls `lost`.
   */
  readonly confirmed: Promise<void>;
  /** The holder's deadline on the monotonic clock (performance.now()), in heartbeat mode. */
  deadline(): HoldDeadline | undefined;
  /** Stops renewing and watching; `lost` is not called any more. */
  stop(): void;
}

export function keepGrant(o: KeepOptions): GrantKeeper {
  const { cluster, claimName, leaseMs } = o;
  let over = false;
  let markConfirmed!: () => void;
  const confirmed = new Promise<void>((resolve) => (markConfirmed = resolve));
  // Until a first renewal is confirmed, the deadline counts from now: the grant was just seen.
  let deadline = leaseMs !== undefined ? holdDeadline(performance.now(), leaseMs) : undefined;
  let timer: NodeJS.Timeout | undefined;

  const end = () => {
    over = true;
    clearTimeout(timer);
    heartbeat?.stop();
    watch.stop();
  };
  const lose = (why: string) => {
    if (over) return;
    end();
    o.lost(why);
  };
  const arm = () => {
    if (!deadline || over) return;
    clearTimeout(timer);
    timer = setTimeout(() => {
      if (performance.now() < deadline!.stopAt) return arm();
      const margin = driftMarginMs(leaseMs!);
      lose(`no renewal of claim ${claimName} was confirmed for ${formatDuration(leaseMs! - margin)} (the lease minus a margin of ${formatDuration(margin)})`);
    }, Math.max(0, deadline.stopAt - performance.now()));
  };

  const heartbeat: Heartbeat | undefined = leaseMs === undefined ? undefined : startHeartbeat(cluster, claimName, leaseMs, {
    confirmed: (startedAt) => {
      if (over) return;
      deadline = holdDeadline(startedAt, leaseMs);
      arm();
      markConfirmed();
    },
    ended: lose,
    failed: (message) => o.trouble(`renewal failed: ${message}`),
  });
  if (!heartbeat) markConfirmed();
  arm();
  const watch = watchClaim(cluster, claimName, (claim) => {
    const ended = grantEnded(claim, claimName);
    if (ended) lose(ended);
  }, (err) => {
    // Without renewals nothing else could tell of a loss: the grant cannot be kept.
    if (heartbeat) o.trouble(`cannot watch claim ${claimName}: ${err.message}; relying on renewals`);
    else lose(`cannot watch claim ${claimName}: ${err.message}`);
  });

  return {
    confirmed,
    deadline: () => deadline,
    stop: () => {
      if (!over) end();
    },
  };
}
