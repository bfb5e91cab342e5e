/** `usingLock`: acquire, run a routine under the lock, release; like node-redlock's `using`. */
import type * as k8s from "@kubernetes/client-node";
import { acquireLock, type AcquireOptions, type Lock } from "./acquire";

/**
 * The work done under the lock. `signal` aborts when the grant is over (see `Lock.signal`): check it before
 * each write, pass it to what accepts one, and pass `fencingToken` to what the lock guards.
 */
export type LockRoutine<T> = (signal: AbortSignal, fencingToken: string, lock: Lock) => Promise<T>;

/**
 * Acquires the lock (see `acquireLock`), runs `routine` while holding it, and releases it when the routine
 * settles, whether it resolved or threw. Resolves with the routine's result; rejects with its error, or
 * with the release's failure when the routine succeeded. A grant lost meanwhile aborts `signal` and does
 * not by itself end the routine: it is the routine's to stop.
 */
export async function usingLock<T>(kubeConfig: k8s.KubeConfig, options: AcquireOptions, routine: LockRoutine<T>): Promise<T> {
  const lock = await acquireLock(kubeConfig, options);
  let result: T;
  try {
    result = await routine(lock.signal, lock.fencingToken, lock);
  } catch (err) {
    await lock.release().catch(() => undefined);
    throw err;
  }
  await lock.release();
  return result;
}
