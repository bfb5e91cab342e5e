/**
 * The listener fan-out every backend's `watch` needs: one server-side watch per key, however many
 * listeners it has.
 *
 * Contract:
 * - `add(key, onChange, waiter?)` registers a listener of its own (the same function added twice is called
 *   twice, and each returned remover removes one). The first listener of a key calls `open(key)`; the state it
 *   returns is the key's until the last listener is removed, which calls `close(key, state)`. The state is
 *   registered once `open` returns: work it starts that later asks `isCurrent(key, state)` gets true.
 * - `notify(key)` calls the key's listeners as they are now (one that throws does not keep the others from
 *   being called: a watcher's failure is its own); `notifyAll()` every key's. `notify(key, turn)`, from a
 *   backend whose change event names whose turn it is, calls the waiters in `turn` without a read.
 * - Waiters (no herd): a listener added with `waiter` (a holderId waiting on lock key `waiter.key`) is called
 *   only when that holder's turn may have come. After a change, ONE read of the lock's order (`readOrder`: the
 *   holderIds of its holds, then of its waiters, in queue order) decides for every waiter of the key: the first
 *   maxHolders of that order hold or may take a slot now. Changes that come during a read make one more read
 *   after it. A backend that read the order itself passes it (`notifyInOrder`); one that saw the entry just
 *   before a waiter's go calls that waiter alone (`wake`). Without `readOrder`, or when the read fails, every waiter is called (spurious wake-ups are
 *   allowed; missed ones are not).
 * - `clear()` forgets every key and returns their states (the backend is closing: it ends them itself).
 */
import type { QueueState, WaiterWatch } from "../backend";

/** The holderIds of a key's holds, then of its waiters, in queue order (a `readOrder` from a full read). */
export const orderOf = ({ holders, waiting }: QueueState): string[] => [...holders, ...waiting].map((e) => e.holderId);

/** A listener that waits in a lock's queue (lock key `<namespace>/<key>`): called only at its turn. */
export interface Waiter extends WaiterWatch {
  key: string;
}

interface Listener {
  call: () => void;
  waiter?: Waiter;
}

interface Entry<S> {
  listeners: Set<Listener>;
  state: S;
  /** A queue read is running; `again`: a change came during it. */
  reading?: { again: boolean };
}

export class FanOut<S> {
  private readonly entries = new Map<string, Entry<S>>();

  constructor(
    private readonly open: (key: string) => S,
    private readonly close: (key: string, state: S) => void = () => undefined,
    private readonly readOrder?: (lockKey: string) => Promise<readonly string[]>,
  ) {}

  add(key: string, onChange: () => void, waiter?: Waiter): () => void {
    let entry = this.entries.get(key);
    if (!entry) {
      entry = { listeners: new Set(), state: this.open(key) };
      this.entries.set(key, entry);
    }
    const shared = entry;
    const listener: Listener = { call: onChange, waiter }; // its own identity, so one function can listen twice
    shared.listeners.add(listener);
    return () => {
      if (!shared.listeners.delete(listener) || shared.listeners.size > 0 || this.entries.get(key) !== shared) return;
      this.entries.delete(key);
      this.close(key, shared.state);
    };
  }

  has(key: string): boolean {
    return this.entries.has(key);
  }

  /** Whether `state` is still the one watching `key` (not closed, not replaced by a newer opening). */
  isCurrent(key: string, state: S): boolean {
    return this.entries.get(key)?.state === state;
  }

  notify(key: string, turn?: readonly string[]): void {
    this.dispatch(key, (waiters, entry) => {
      if (turn) return waiters.filter((l) => turn.includes(l.waiter!.holderId));
      if (!this.readOrder) return waiters;
      if (entry.reading) entry.reading.again = true;
      else void this.wakeByTurn(key, entry);
      return [];
    });
  }

  /** Calls the waiters of `holderId` on `key` only: the backend saw the entry just before it go (no read). */
  wake(key: string, holderId: string): void {
    call([...(this.entries.get(key)?.listeners ?? [])].filter((l) => l.waiter?.holderId === holderId));
  }

  /**
   * A change whose queue order the backend read itself (ZooKeeper lists the children as it re-arms its watch):
   * as notify(key), with the waiters' turns taken from `order` (holderIds, holds first, in queue order) instead
   * of a read. Undefined (the listing failed) calls every waiter.
   */
  notifyInOrder(key: string, order: readonly string[] | undefined): void {
    this.dispatch(key, (waiters) => inTurnOnly(waiters, order && inTurn(order, waiters)));
  }

  /** Calls the key's plain listeners, then those of its waiters that `pick` chooses (it may wake them later itself). */
  private dispatch(key: string, pick: (waiters: Listener[], entry: Entry<S>) => Listener[]): void {
    const entry = this.entries.get(key);
    if (!entry) return;
    const listeners = [...entry.listeners];
    call(listeners.filter((l) => !l.waiter));
    const waiters = listeners.filter((l) => l.waiter);
    if (waiters.length > 0) call(pick(waiters, entry));
  }

  /** Reads the queue (again while changes come during the read) and calls the waiters whose turn it may be. */
  private async wakeByTurn(key: string, entry: Entry<S>): Promise<void> {
    const reading = (entry.reading = { again: false });
    try {
      do {
        reading.again = false;
        const waiters = [...entry.listeners].filter((l) => l.waiter);
        if (waiters.length === 0 || this.entries.get(key) !== entry) return;
        call(inTurnOnly(waiters, await this.turn(waiters)));
      } while (reading.again);
    } finally {
      entry.reading = undefined;
    }
  }

  /**
   * The holderIds that hold or may take a slot now (the latest waiter's maxHolders), or undefined: call them all.
   * A waiter already holding is woken to find so (an etcd entry becomes the hold once those before it go).
   */
  private async turn(waiters: Listener[]): Promise<Set<string> | undefined> {
    try {
      return inTurn(await this.readOrder!(waiters[0].waiter!.key), waiters);
    } catch {
      return undefined;
    }
  }

  notifyAll(): void {
    for (const key of [...this.entries.keys()]) this.notify(key);
  }

  /** The watched keys with their states. */
  watched(): [string, S][] {
    return [...this.entries].map(([key, entry]) => [key, entry.state]);
  }

  get size(): number {
    return this.entries.size;
  }

  clear(): S[] {
    const states = [...this.entries.values()].map((e) => e.state);
    this.entries.clear();
    return states;
  }
}

/** The holderIds in `order` that hold or may take a slot now (the latest waiter's maxHolders). */
function inTurn(order: readonly string[], waiters: Listener[]): Set<string> {
  return new Set(order.slice(0, waiters[waiters.length - 1].waiter!.maxHolders));
}

/** The waiters whose turn it may be: those in `turn`, or every one when it is unknown. */
function inTurnOnly(waiters: Listener[], turn: Set<string> | undefined): Listener[] {
  return turn ? waiters.filter((l) => turn.has(l.waiter!.holderId)) : waiters;
}

function call(listeners: Listener[]): void {
  for (const listener of listeners) {
    try {
      listener.call();
    } catch {
      // the listener's own failure
    }
  }
}
