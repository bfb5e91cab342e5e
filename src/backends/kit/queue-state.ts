/** Turning a backend's own entries into the contract's holds and queue: what every backend repeats. */
import type { Hold, HolderInfo, QueueState } from "../backend";

/** Only the HolderInfo fields of a hold or of a stored entry (both carry more). */
export function holderInfo({ holderId, claim, holderIdentity, cluster }: HolderInfo): HolderInfo {
  return { holderId, claim, holderIdentity, cluster };
}

/** A key's entries in queue order, each marked whether it holds, as its holds and its waiters. */
export function splitQueue<E extends { holds: boolean }>(ranked: readonly E[], toHold: (entry: E) => Hold): QueueState {
  return {
    holders: ranked.filter((e) => e.holds).map(toHold),
    waiting: ranked.filter((e) => !e.holds).map((e) => holderInfo(toHold(e))),
  };
}
