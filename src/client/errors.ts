/** The errors of the client library: one class, with a code to branch on. */
import { CliError, Exit, describeError } from "../cli/common";

/**
 * Why acquiring failed, or why a grant ended:
 * - `Timeout`: not granted within `timeoutMs`;
 * - `Busy`: try-once (`wait: false` or `timeoutMs: 0`) and the operator queued the claim instead of granting it;
 * - `ClaimEnded`: the claim ended (Lost, Expired, Rejected, Released) or was deleted before it was granted;
 * - `NotFound`: the lock (or an adopted claim) does not exist;
 * - `PermissionDenied`: the API server refused a request (bind the `kubelock-claimer` ClusterRole);
 * - `Lost`: the grant ended while held (the `reason` of `Lock.signal`);
 * - `Released`: `release()` ended the grant (the `reason` of `Lock.signal`);
 * - `Unexpected`: anything else (the API server unreachable, a claim of that name for another lock, ...).
 */
export type LockErrorCode = "Timeout" | "Busy" | "ClaimEnded" | "NotFound" | "PermissionDenied" | "Lost" | "Released" | "Unexpected";

export class LockError extends Error {
  override readonly name = "LockError";

  constructor(readonly code: LockErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

const byExitCode: Record<number, LockErrorCode> = {
  [Exit.Timeout]: "Timeout",
  [Exit.Busy]: "Busy",
  [Exit.ClaimEnded]: "ClaimEnded",
  [Exit.NotFound]: "NotFound",
  [Exit.PermissionDenied]: "PermissionDenied",
};

/**
 * The library's error for a failure of the CLI's building blocks (a CliError carries an exit code);
 * a LockError, or an abort reason the caller gave, passes unchanged.
 */
export function toLockError(err: unknown): unknown {
  if (err instanceof LockError) return err;
  if (err instanceof CliError) return new LockError(byExitCode[err.code] ?? "Unexpected", err.message, { cause: err });
  if (err instanceof Error && err.name === "AbortError") return err;
  return new LockError("Unexpected", describeError(err), { cause: err });
}
