/**
 * When this process first saw each version of something another process renews: a slot Lease's
 * resourceVersion, an etcd key's mod revision, a heartbeat claim's spec.renewTime. Expiry is then judged
 * as client-go's leader election judges a Lease: "unchanged for a lease duration since this process first
 * saw it, on this process's own clock". A timestamp written by another machine is never compared with the
 * local clock, so a skewed clock on either side can neither expire a hold early nor keep it forever.
 *
 * A version seen for the first time (after a restart, a failover, a reconnect) starts its clock afresh:
 * expiry is judged late, never early. A version this process wrote itself counts from when the write was
 * sent (`wrote`), so its own view of its hold ends no later than any other observer's.
 *
 * Entries are kept per group (a lock key); `sync` replaces a group's members with what a full read found,
 * so deleted objects are forgotten.
 *
 * Time during which this process could not reach the server does not count either (`interrupted`): a holder
 * could not renew then, and its own operator could not write that it lost its hold. Every observation starts
 * afresh at the next sighting, as etcd's lessor extends every lease when a new leader takes over. Expiry after
 * an outage is therefore judged at least a full lease after the server answered again.
 */

/**
 * A clock for observation times: ms on the monotonic clock (offset by the wall clock at process start, so the
 * numbers look like epoch ms). Setting the wall clock (NTP steps, an operator fixing a skew) does not move it.
 */
export const monotonicNow = (): number => performance.timeOrigin + performance.now();

interface Seen {
  version: string;
  at: number;
}

export class ObservedVersions {
  private readonly groups = new Map<string, Map<string, Seen>>();

  /**
   * Notes every member of `group` as one full read found them (members not listed are forgotten) and
   * returns when each member's current version was first seen.
   */
  sync(group: string, members: Iterable<readonly [id: string, version: string]>, now: number): Map<string, number> {
    const previous = this.groups.get(group);
    const next = new Map<string, Seen>();
    for (const [id, version] of members) {
      const seen = previous?.get(id);
      next.set(id, seen?.version === version ? seen : { version, at: now });
    }
    if (next.size > 0) this.groups.set(group, next);
    else this.groups.delete(group);
    return new Map([...next].map(([id, seen]) => [id, seen.at]));
  }

  /** Notes one member's version (a watch event, a single read); returns when that version was first seen. */
  note(group: string, id: string, version: string, now: number): number {
    const members = this.groups.get(group) ?? new Map<string, Seen>();
    this.groups.set(group, members);
    const seen = members.get(id);
    if (seen?.version === version) return seen.at;
    members.set(id, { version, at: now });
    return now;
  }

  /** A version this process wrote: seen from `sentAt`, when the write was sent. */
  wrote(group: string, id: string, version: string, sentAt: number): void {
    const members = this.groups.get(group) ?? new Map<string, Seen>();
    this.groups.set(group, members);
    members.set(id, { version, at: sentAt });
  }

  /** When `version` of a member was first seen, if it is the version last noted. */
  seenAt(group: string, id: string, version: string): number | undefined {
    const seen = this.groups.get(group)?.get(id);
    return seen?.version === version ? seen.at : undefined;
  }

  drop(group: string, id: string): void {
    const members = this.groups.get(group);
    members?.delete(id);
    if (members?.size === 0) this.groups.delete(group);
  }

  forget(group: string): void {
    this.groups.delete(group);
  }

  /** The server could not be reached: every observation starts afresh when next seen. */
  interrupted(): void {
    this.groups.clear();
  }
}
