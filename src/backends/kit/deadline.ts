/**
 * Bounds one backend call: `work`'s outcome, or a rejection with `timedOut()` (a BackendUnavailableError,
 * as the contract says of a server that does not answer in time) once `ms` passed first. The work itself
 * goes on; its late outcome is ignored.
 */
export async function withDeadline<T>(work: Promise<T>, ms: number, timedOut: () => Error): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(timedOut()), ms);
  });
  try {
    return await Promise.race([work, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
