/**
 * The guarded resource: one fenced register per lock, in this process, with its own (monotonic) clock so
 * every critical section of a run is on one time line.
 *
 * A worker enters with its claim's fencing token and leaves when done. For a mutex the register rejects a
 * token lower than the highest it has accepted: the caller is a stale holder, fenced off (the textbook use
 * of fencing tokens). An equal token is accepted and recorded, so the checker sees a token granted twice.
 * A semaphore's holders overlap legitimately, so their tokens are not ordered: it accepts every token.
 */
import { now } from "./util";

export interface Section {
  lock: string;
  worker: string;
  claim: string;
  token: bigint;
  enter: number;
  /** Undefined while the worker is inside. */
  leave?: number;
}

export interface Rejection {
  lock: string;
  worker: string;
  claim: string;
  token: bigint;
  at: number;
  /** When the holder sent its entry (a command's report may be read late), if it said. */
  sentAt?: number;
  /** The highest token accepted so far, and whose it was. */
  highest: bigint;
  highestClaim: string;
  /** When that claim entered. */
  highestAt: number;
}

export class FencedRegister {
  readonly sections: Section[] = [];
  readonly rejections: Rejection[] = [];
  private highest?: { token: bigint; claim: string; at: number };

  constructor(readonly lock: string, readonly maxHolders: number) {}

  get mutex(): boolean {
    return this.maxHolders === 1;
  }

  /** The section if accepted, else undefined (recorded as a rejection). */
  enter(worker: string, claim: string, token: bigint, sentAt?: number): Section | undefined {
    const at = now();
    if (this.mutex && this.highest && token < this.highest.token) {
      this.rejections.push({ lock: this.lock, worker, claim, token, at, sentAt, highest: this.highest.token, highestClaim: this.highest.claim, highestAt: this.highest.at });
      return undefined;
    }
    if (!this.highest || token >= this.highest.token) this.highest = { token, claim, at };
    const section: Section = { lock: this.lock, worker, claim, token, enter: at };
    this.sections.push(section);
    return section;
  }

  leave(section: Section): void {
    section.leave ??= now();
  }

  /** Accepted sections that have started at or after `since`. */
  acceptedSince(since: number): number {
    let count = 0;
    for (let i = this.sections.length - 1; i >= 0 && this.sections[i].enter >= since; i--) count++;
    return count;
  }
}
