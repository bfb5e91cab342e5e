/**
 * libfaketime (Debian's faketime package), preloaded into one process to skew its wall clock. Always preloaded,
 * never through the `faketime` command: that wrapper leaves a semaphore and a shared-memory file in /dev/shm
 * named after its pid, and a later wrapper that gets the same pid fails ("sem_open: File exists").
 */
import { existsSync, readdirSync } from "node:fs";

/** The library's path, or undefined when the package is not installed. */
export function findLibfaketime(): string | undefined {
  const dirs = existsSync("/usr/lib") ? readdirSync("/usr/lib").map((d) => `/usr/lib/${d}/faketime`) : [];
  return [...dirs, "/usr/lib/faketime", "/usr/local/lib/faketime"].map((d) => `${d}/libfaketime.so.1`).find((f) => existsSync(f));
}

/** The library's path; throws a message that says what to install when it is missing. */
export function libfaketime(): string {
  const found = findLibfaketime();
  if (!found) throw new Error("libfaketime.so.1 not found: install the Debian package faketime (make deps does)");
  return found;
}

/** Environment variables that run a process with its wall clock `offset` off ("+120s", "-1h"); monotonic clocks stay true. */
export const skewedClock = (offset: string): Record<string, string> => ({ LD_PRELOAD: libfaketime(), FAKETIME: offset, FAKETIME_DONT_FAKE_MONOTONIC: "1" });
