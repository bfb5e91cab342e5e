/**
 * The listener fan-out every backend's `watch` needs: one server-side watch per key, however many
 * listeners it has.
 *
 * Contract:
 * - `add(key, onChange)` registers a listener of its own (the same function added twice is called twice,
 *   and each returned remover removes one). The first listener of a key calls `open(key)`; the state it
 *   returns is the key's until the last listener is removed, which calls `close(key, state)`. The state is
 *   registered once `open` returns: work it starts that later asks `isCurrent(key, state)` gets true.
 * - `notify(key)` calls the key's listeners as they are now (one that throws does not keep the others from
 *   being called: a watcher's failure is its own); `notifyAll()` every key's.
 * - `clear()` forgets every key and returns their states (the backend is closing: it ends them itself).
 */
interface Entry<S> {
  listeners: Set<() => void>;
  state: S;
}

export class FanOut<S> {
  private readonly entries = new Map<string, Entry<S>>();

  constructor(
    private readonly open: (key: string) => S,
    private readonly close: (key: string, state: S) => void = () => undefined,
  ) {}

  add(key: string, onChange: () => void): () => void {
    let entry = this.entries.get(key);
    if (!entry) {
      entry = { listeners: new Set(), state: this.open(key) };
      this.entries.set(key, entry);
    }
    const shared = entry;
    const listener = () => onChange(); // its own identity, so one function can listen twice
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

  notify(key: string): void {
    for (const listener of [...(this.entries.get(key)?.listeners ?? [])]) {
      try {
        listener();
      } catch {
        // the listener's own failure
      }
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
