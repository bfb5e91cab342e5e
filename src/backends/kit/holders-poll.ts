/**
 * The watch fallback of a backend whose holds can vanish with nothing anyone hears of (expiry on the server
 * writes no event): every `everyMs`, the key's holders are read, and `changed()` is called when they differ
 * from the previous read. The first read calls it too: the watcher read the holders itself before it started
 * the watch, and a change in between (a hold released or expired just then) would otherwise never be told. A
 * failed read is skipped: the backend's reconnect wakes its watchers anyway.
 */
import type { Hold } from "../backend";

export class HoldersPoll {
  private seen?: string;
  private readonly timer: NodeJS.Timeout;

  constructor(private readonly read: () => Promise<Hold[]>, private readonly changed: () => void, everyMs: number) {
    this.timer = setInterval(() => void this.poll(), everyMs).unref();
    void this.poll();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  private async poll(): Promise<void> {
    try {
      const seen = (await this.read()).map((h) => `${h.holderId}:${h.fencingToken}`).join(",");
      if (this.seen !== seen) this.changed();
      this.seen = seen;
    } catch {
      // unreachable now: the next read, or the backend's reconnect, tells
    }
  }
}
