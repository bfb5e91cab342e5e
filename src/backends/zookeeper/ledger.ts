/**
 * Which child changes of a lock node were this session's own: enough to prove, from a listing alone, that the
 * child a session just created was the last change before that listing, so that the listing's pzxid is that
 * child's czxid (its fencing token) and no read of the child is needed.
 *
 * The facts it stands on:
 * - A session's requests are served in the order they were sent, and their replies come back in that order.
 * - A listing's stat (getChildren2) carries the lock node's cversion, which every child create and every child
 *   delete raises by one (the server reports its count of creates × 2 − children, i.e. the number of changes),
 *   its number of children, its pzxid (the zxid of the last child change) and its own czxid.
 *
 * So between two listings answered on one session, if the cversion grew by exactly the number of this session's
 * own changes sent between them (creates and deletes that took effect), the children count moved by exactly
 * their net, and the lock node is the same one (same czxid), then nobody else changed the children meanwhile,
 * and the later listing's pzxid is the zxid of the last change this session sent before it. Any change whose
 * outcome is unknown (a lost connection, a request refused) spoils the proof until the next listing: a proof
 * that fails costs only the read it would have spared.
 */

/** What a listing's stat says about the lock node. */
export interface ListingStat { czxid: number; cversion: number; numChildren: number; pzxid: number }

/** What a change request did to the children: +1 (a child created), -1 (deleted), 0 (nothing); NaN: unknown. */
type Effect = number;

class Ledger {
  /** This session's child changes sent since `latest` was sent: global index and effect, in send order. */
  private readonly changes: { index: number; effect: Effect }[] = [];
  /** The latest listing answered with a stat, and the index of the last change (of any lock) sent before it. */
  private latest?: { stat: ListingStat; lastIndex: number };

  sending(index: number): (effect: Effect) => void {
    const change = { index, effect: Number.NaN };
    this.changes.push(change);
    return (effect) => void (change.effect = effect);
  }

  /** A listing is being sent; its answer (a stat, or undefined when it failed) returns what it proves. */
  listing(lastIndex: number): (stat: ListingStat | undefined) => number | undefined {
    return (stat) => {
      if (!stat) return undefined;
      const previous = this.latest;
      this.latest = { stat, lastIndex };
      const sentBefore = this.changes.findIndex((c) => c.index > lastIndex);
      const between = this.changes.splice(0, sentBefore === -1 ? this.changes.length : sentBefore);
      if (!previous || previous.stat.czxid !== stat.czxid || between.some((c) => Number.isNaN(c.effect))) return undefined;
      const effective = between.filter((c) => c.effect !== 0);
      const net = effective.reduce((sum, c) => sum + c.effect, 0);
      const ours = stat.cversion - previous.stat.cversion === effective.length && stat.numChildren - previous.stat.numChildren === net;
      return ours ? effective.at(-1)?.index : undefined;
    };
  }
}

/** One ledger per lock node and session (client): a new session starts with none. */
export class ChildLedgers<Session extends object> {
  private readonly bySession = new WeakMap<Session, Map<string, Ledger>>();
  private sent = 0;

  constructor(private readonly remembered: number) {}

  /** A create or delete of a child of `lock` is being sent now on `session`: its index, and where its effect goes. */
  changing(session: Session, lock: string): { index: number; settle: (effect: Effect) => void } {
    const index = ++this.sent;
    return { index, settle: this.of(session, lock).sending(index) };
  }

  /**
   * A listing of `lock` is being sent now on `session`. Its answer's stat returns the index of the last change sent
   * before it when every child change since the previous listing answered on this session was this session's own
   * (see the file's comment), else undefined.
   */
  listing(session: Session, lock: string): (stat: ListingStat | undefined) => number | undefined {
    return this.of(session, lock).listing(this.sent);
  }

  private of(session: Session, lock: string): Ledger {
    let locks = this.bySession.get(session);
    if (!locks) this.bySession.set(session, (locks = new Map()));
    if (locks.size >= this.remembered && !locks.has(lock)) locks.clear(); // forgetting costs one read each
    let ledger = locks.get(lock);
    if (!ledger) locks.set(lock, (ledger = new Ledger()));
    return ledger;
  }
}
