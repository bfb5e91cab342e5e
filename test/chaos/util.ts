/** Small helpers of the chaos suite: one monotonic clock, a seeded random source, bounded retries. */
import { performance } from "node:perf_hooks";

/** Milliseconds on this process's monotonic clock: every timestamp of a run comes from here, so they compare. */
export const now = (): number => performance.now();

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));

/** mulberry32: a small seeded generator, so a run's schedule can be replayed with CHAOS_SEED. */
export class Random {
  private state: number;
  constructor(readonly seed: number) {
    this.state = seed >>> 0;
  }
  next(): number {
    let t = (this.state = (this.state + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  /** An integer in [min, max]. */
  int(min: number, max: number): number {
    return min + Math.floor(this.next() * (max - min + 1));
  }
  pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.next() * items.length)];
  }
  shuffle<T>(items: readonly T[]): T[] {
    const out = [...items];
    for (let i = out.length - 1; i > 0; i--) {
      const j = Math.floor(this.next() * (i + 1));
      [out[i], out[j]] = [out[j], out[i]];
    }
    return out;
  }
}

/** Rejects after `ms` (the call itself goes on; its result is ignored). */
export function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms}ms`)), ms)));
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * Calls `call` until it resolves, retrying failures (the API server or a backend may be down for a
 * while) with capped backoff, each attempt bounded by `attemptMs`; gives up at `deadline` (a `now()`).
 */
export async function retry<T>(what: string, call: () => Promise<T>, deadline: number, attemptMs = 10_000): Promise<T> {
  let last: unknown;
  for (let delay = 50, attempt = 0; attempt < 10_000; attempt++, delay = Math.min(delay * 2, 1000)) {
    try {
      return await withTimeout(call(), attemptMs, what);
    } catch (err) {
      last = err;
    }
    if (now() + delay > deadline) break;
    await sleep(delay);
  }
  throw new Error(`${what} failed until the deadline: ${errorText(last)}`);
}

export function errorText(err: unknown): string {
  if (err && typeof err === "object" && "code" in err && "body" in err) {
    const body = (err as { body?: unknown }).body;
    const message = typeof body === "string" ? body.slice(0, 200) : JSON.stringify(body)?.slice(0, 200);
    return `HTTP ${(err as { code: unknown }).code}: ${message}`;
  }
  return err instanceof Error ? err.message : String(err);
}

/** `ms` as seconds with one decimal, for reports. */
export const secs = (ms: number): string => `${(ms / 1000).toFixed(1)}s`;
