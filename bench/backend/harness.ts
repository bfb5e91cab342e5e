/**
 * What benchmark 1 measures for every lock implementation ("subject"): our backend, the raw client doing
 * the minimal equivalent, and a peer library. A subject only knows how to take a key once; the two
 * workloads below are shared, so every subject is measured the same way.
 */
import { randomUUID } from "node:crypto";
import type { LockBackend } from "../../src/backends/backend";
import { now, sleep, type RunResult } from "../lib/stats";

/** Gives the lock back. */
export type Release = () => Promise<void>;

export interface Subject {
  /** "ours", "raw" or "peer"; "floor": the least a recipe like ours needs (a finding's baseline, not in the tables). */
  role: "ours" | "raw" | "peer" | "floor";
  /** What it is, for the table: e.g. "redlock 5.0.0-beta.2". */
  label: string;
  /** One attempt, never waiting: a release function when the key was taken, undefined when it is held. */
  tryAcquire(key: string): Promise<Release | undefined>;
  /** Waits until the key is taken (recipes that queue, such as ZooKeeper's). Without it, contenders spin on tryAcquire. */
  acquire?(key: string): Promise<Release>;
  /** Calls `onChange` when the key may have been released; contenders then wait for it instead of spinning. */
  watch?(key: string, onChange: () => void): () => void;
  /** Ours, waiting in the backend's queue (`wait: true`): the subject the contended targets are defined on. */
  queued?: boolean;
  /** Which workloads it takes part in (default both). */
  modes?: ("uncontended" | "contended")[];
  close(): Promise<void>;
}

/** `ops` times, one after another: tryAcquire on a fresh key, then release. Latency = the pair. */
export async function uncontended(subject: Subject, keys: (i: number) => string, ops: number): Promise<RunResult> {
  const latencies: number[] = [];
  const start = now();
  for (let i = 0; i < ops; i++) {
    const t0 = now();
    const release = await subject.tryAcquire(keys(i));
    if (!release) throw new Error(`${subject.label}: a fresh key was already held`);
    await release();
    latencies.push(now() - t0);
  }
  return { rate: ops / ((now() - start) / 1000), latencies };
}

/**
 * `contenders` loops on one key for `durationMs`: each waits for the lock (spinning on tryAcquire, or
 * retrying it when the subject's watch fires, or the subject's own acquire), releases it at once and
 * starts over. Rate = grants completed per second;
 * latency = how long each grant was waited for.
 */
export async function contended(subject: Subject, key: string, contenders: number, durationMs: number): Promise<RunResult> {
  const latencies: number[] = [];
  const start = now();
  const deadline = start + durationMs;
  const cpu = process.cpuUsage();
  let grants = 0;
  const loop = async () => {
    let changed = signal();
    const unwatch = subject.watch?.(key, () => changed.fire());
    while (now() < deadline) {
      const t0 = now();
      let release: Release | undefined;
      if (subject.acquire) release = await subject.acquire(key);
      else {
        while (!release && now() < deadline) {
          changed = signal(); // a change after this point wakes the wait below
          release = await subject.tryAcquire(key);
          if (!release && unwatch) await Promise.race([changed.fired, sleep(Math.min(1000, Math.max(0, deadline - now())))]);
        }
      }
      if (!release) break;
      const granted = now();
      await release();
      if (granted <= deadline) {
        grants++;
        latencies.push(granted - t0);
      }
    }
    unwatch?.();
  };
  await Promise.all(Array.from({ length: contenders }, loop)); // grants after the deadline are not counted
  const used = process.cpuUsage(cpu);
  const cpuMicros = grants > 0 ? (used.user + used.system) / grants : undefined;
  return { rate: grants / (durationMs / 1000), latencies, cpuMicros };
}

function signal(): { fired: Promise<void>; fire: () => void } {
  let fire!: () => void;
  const fired = new Promise<void>((resolve) => (fire = resolve));
  return { fired, fire };
}

/**
 * Our backend as subjects: one fresh holderId (a claim UID) per attempt, maxHolders 1, a 30 s lease. The
 * second and third take part in the contended workload only: the second's contenders retry when
 * `backend.watch` fires instead of spinning; the third waits in the backend's queue as the operator does
 * (`wait: true`: its entry keeps its place, and it asks again when its watch says its turn may have come, or
 * every second).
 */
export function oursSubjects(backend: LockBackend): Subject[] {
  const request = (key: string, wait = false) =>
    ({ key, holderId: randomUUID(), claim: "bench", holderIdentity: "bench", cluster: "", maxHolders: 1, leaseDurationSeconds: 30, wait });
  const releaser = (key: string, holderId: string): Release => async () => void (await backend.release(key, holderId));
  const tryAcquire = async (key: string): Promise<Release | undefined> => {
    const req = request(key);
    return (await backend.tryAcquire(req)) && releaser(key, req.holderId);
  };
  const acquire = async (key: string): Promise<Release> => {
    const req = request(key, true);
    let changed = signal();
    const unwatch = backend.watch(key, () => changed.fire(), { holderId: req.holderId, maxHolders: req.maxHolders }); // woken at its turn
    try {
      for (;;) {
        changed = signal();
        if (await backend.tryAcquire(req)) return releaser(key, req.holderId);
        await Promise.race([changed.fired, sleep(1000)]);
      }
    } finally {
      unwatch();
    }
  };
  const label = `kubelock ${backend.constructor.name}`;
  return [
    { role: "ours", label, tryAcquire, close: () => backend.close() },
    { role: "ours", label: `${label}, woken by its watch()`, tryAcquire, watch: (key, onChange) => backend.watch(key, onChange), modes: ["contended"], close: async () => undefined },
    { role: "ours", label: `${label}, waiting in the backend's queue`, tryAcquire, acquire, queued: true, modes: ["contended"], close: async () => undefined },
  ];
}
