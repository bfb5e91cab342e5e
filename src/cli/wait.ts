/**
 * `kubelock wait --lock L`: creates (or adopts) a LockClaim, follows it with a watch, prints its queue
 * position as it moves, and exits 0 once it is granted, writing the fencing token to --token-file.
 * Meant as an init container (the claim is named after the pod, from the downward API, and owned by
 * it), but works from anywhere with `--claim NAME`.
 */
import { mkdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { ClaimReason, TERMINAL_PHASES, type LockClaim } from "../api/types";
import { watchClaim } from "./claim-watch";
import {
  CliError, COMMON_FLAGS_HELP, EXIT_CODES_HELP, Exit, command, connect, deleteClaim, describeError, durationFlag,
  getLock, grantedCondition, integerFlag, lockNotFound, parseFlags, podIdentity, usageError, type Cluster,
} from "./common";
import { formatDuration, parseSeconds, DurationError } from "./duration";
import { createOrReplaceEnded } from "./ended-claim";

/** How long try-once waits for the operator's first answer (granted or queued) unless told. */
export const TRY_ONCE_ANSWER_MS = 30_000;

export const waitHelp = `Usage: kubelock wait --lock LOCK [flags]

Asks for a DistributedLock and waits until it is granted. Creates the LockClaim named after this pod
(POD_NAME, POD_NAMESPACE and POD_UID from the downward API), owned by the pod so it is deleted with
it, or adopts that claim if it exists already (the operator creates it for pods annotated
kubelock.io/lock). Prints the queue position whenever it changes, writes the fencing token to
--token-file and exits 0 once granted. The grant then lasts until the pod ends, the claim is
deleted or 'kubelock release' runs.

Outside a pod (no POD_NAME), --claim NAME is required and the claim itself is the holder. A claim
this command created without a pod is deleted again when the wait fails (timeout, missing lock,
interrupt), so it never holds the lock with nobody behind it; an adopted claim, or a pod's claim,
is left in place (a restarted init container keeps its place in the queue). With --no-wait, a
claim this command created is deleted when it is not granted at once, a pod's claim included.

A claim that has ended (released, expired, lost, rejected) is never granted again. If the claim of
that name has ended and kubelock made it (this command, 'kubelock run', the client library, or the
operator for an annotated pod), it is deleted and made anew, so the same name can ask again after a
release; an ended claim made otherwise (kubectl apply) is left alone: delete it to ask again.

Flags:
      --lock LOCK          the DistributedLock to wait for (required)
      --claim NAME         the LockClaim's name (default: POD_NAME)
      --timeout D          give up after this long, e.g. 30s, 5m, 1h30m (default: wait forever);
                           0s means --no-wait
      --no-wait            try once, like flock -n: if the operator queues the claim instead of granting
                           it at once, delete the claim this command created and exit 7 (--timeout then
                           bounds the wait for the operator's answer, default ${formatDuration(TRY_ONCE_ANSWER_MS)})
      --token-file FILE    write the fencing token here once granted (parent directories are created;
                           the file is replaced atomically)
      --priority N         queue priority of a new claim: higher goes first (default 0)
      --lease-duration D   heartbeat mode for a new claim: the holder must run 'kubelock renew' within
                           this long (whole seconds, e.g. 30s) or the grant expires (default: off)
${COMMON_FLAGS_HELP}

${EXIT_CODES_HELP.replace("success (granted, released, renewed)", "granted")}`;

export interface WaitOptions {
  cluster: Cluster;
  claimName: string;
  lockName: string;
  /** Give up (Exit.Timeout) after this long; 0 means `once`. */
  timeoutMs?: number;
  /**
   * Try once, like `flock -n`: when the operator answers by queueing the claim (a queue position) rather
   * than granting it, fail with Exit.Busy. `timeoutMs` then bounds the wait for that answer (default
   * TRY_ONCE_ANSWER_MS); other answers (the backend down, the pod missing) do not end the wait.
   */
  once?: boolean;
  /** Progress lines ("waiting for lock L: position 2"). */
  out: (line: string) => void;
  /** Aborting stops the wait; the promise rejects with `signal.reason`. */
  signal?: AbortSignal;
}

/** Follows the claim until it is granted (resolves with it) or the wait fails (rejects with a CliError). */
export function waitForGrant(options: WaitOptions): Promise<LockClaim> {
  const { cluster, claimName, lockName, out, signal } = options;
  const { namespace } = cluster;
  const once = options.once === true || options.timeoutMs === 0;
  const timeoutMs = once ? options.timeoutMs || TRY_ONCE_ANSWER_MS : options.timeoutMs;
  return new Promise<LockClaim>((resolvePromise, rejectPromise) => {
    let position: number | undefined;
    let lastNote = "";
    let finished = false;
    let checkingLock = false;
    let timer: NodeJS.Timeout | undefined;
    const finish = (result: { claim: LockClaim } | { error: unknown }) => {
      if (finished) return;
      finished = true;
      watch.stop();
      if (timer) clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
      if ("claim" in result) resolvePromise(result.claim);
      else rejectPromise(result.error);
    };
    const fail = (message: string, code: number) => finish({ error: new CliError(message, code) });
    const onAbort = () => finish({ error: signal?.reason ?? new CliError("interrupted", Exit.Unexpected) });

    const onClaim = (claim: LockClaim | undefined) => {
      if (!claim) return fail(`claim ${claimName} was deleted while waiting for lock ${lockName}`, Exit.ClaimEnded);
      if (claim.metadata.deletionTimestamp) return fail(`claim ${claimName} is being deleted; it cannot be granted lock ${lockName}`, Exit.ClaimEnded);
      const status = claim.status;
      const condition = grantedCondition(claim);
      if (status?.phase === "Granted") return finish({ claim });
      if (status?.phase && TERMINAL_PHASES.includes(status.phase)) {
        const why = condition ? ` (${condition.reason}): ${condition.message}` : "";
        return fail(`claim ${claimName} ended with phase ${status.phase}${why}; delete it to ask for lock ${lockName} again`, Exit.ClaimEnded);
      }
      if (condition?.reason === ClaimReason.LockNotFound) {
        // The status may predate the lock (a claim applied before its lock): believe it only if the lock is missing now.
        if (!checkingLock) {
          checkingLock = true;
          void getLock(cluster, lockName).then(() => undefined, (err: unknown) => {
            if (err instanceof CliError && err.code === Exit.NotFound) fail(lockNotFound(lockName, namespace), Exit.NotFound);
          }).finally(() => (checkingLock = false));
        }
        return;
      }
      if (once && (status?.position !== undefined || condition?.reason === ClaimReason.Waiting)) {
        const where = status?.position !== undefined ? ` at position ${status.position}` : "";
        return fail(`lock ${lockName} is not free: the operator queued claim ${claimName}${where} instead of granting it at once (try-once)`, Exit.Busy);
      }
      if (status?.position !== undefined) {
        if (status.position !== position) {
          position = status.position;
          out(`waiting for lock ${lockName}: position ${position}`);
        }
      } else if (condition && condition.reason !== ClaimReason.Waiting) {
        // Pending but not queued: the backend is down, the pod is missing, ...
        position = undefined;
        const note = `waiting for lock ${lockName}: ${condition.reason}: ${condition.message}`;
        if (note !== lastNote) out(note);
        lastNote = note;
      }
    };

    if (signal?.aborted) return rejectPromise(signal.reason);
    signal?.addEventListener("abort", onAbort, { once: true });
    const watch = watchClaim(cluster, claimName, onClaim, (err) => finish({ error: err }));
    if (timeoutMs !== undefined) {
      timer = setTimeout(() => {
        const note = lastNote ? lastNote.replace(`waiting for lock ${lockName}: `, "") : "";
        if (once) {
          return fail(`timed out after ${formatDuration(timeoutMs)} waiting for the operator to grant or queue claim ${claimName} (try-once)${note ? `: ${note}` : "; is the kubelock operator running?"}`, Exit.Timeout);
        }
        const where = position !== undefined ? `at position ${position}` : `(claim ${claimName} is not queued yet${note ? `: ${note}` : "; is the kubelock operator running?"})`;
        fail(`timed out after ${formatDuration(timeoutMs)} waiting for lock ${lockName} ${where}`, Exit.Timeout);
      }, timeoutMs);
    }
  });
}

/**
 * `waitForGrant` for a holder that made (or adopted) its claim: SIGINT/SIGTERM/SIGHUP interrupt the wait, and
 * on any failure a claim this command `created` is deleted, so it cannot take the lock later with nobody behind it.
 */
export async function waitAsHolder(options: Omit<WaitOptions, "signal"> & { created: boolean }): Promise<LockClaim> {
  const { cluster, claimName, lockName, created, out } = options;
  const interrupt = new AbortController();
  const unregister = abortOnSignals(interrupt, `waiting for lock ${lockName}`);
  try {
    return await waitForGrant({ ...options, signal: interrupt.signal });
  } catch (err) {
    if (created) await deleteClaim(cluster, claimName).catch((e) => out(`could not delete claim ${claimName}: ${describeError(e)}`));
    throw err;
  } finally {
    unregister();
  }
}

/** Writes `content` to `file` atomically (a temporary file in the same directory, then rename). */
export function writeFileAtomic(file: string, content: string): void {
  const target = resolve(file);
  mkdirSync(dirname(target), { recursive: true });
  const temporary = `${target}.tmp-${process.pid}`;
  try {
    writeFileSync(temporary, content, { mode: 0o644 });
    renameSync(temporary, target);
  } catch (err) {
    rmSync(temporary, { force: true });
    throw new CliError(`cannot write ${file}: ${err instanceof Error ? err.message : String(err)}`, Exit.Unexpected);
  }
}

/** SIGINT/SIGTERM abort `controller` with a CliError carrying 128+signal; returns the un-registration. */
export function abortOnSignals(controller: AbortController, what: string): () => void {
  const handlers = (["SIGINT", "SIGTERM"] as const).map((sig) => {
    const handler = () => controller.abort(new CliError(`interrupted by ${sig} while ${what}`, sig === "SIGINT" ? 130 : 143));
    process.on(sig, handler);
    return () => process.off(sig, handler);
  });
  return () => handlers.forEach((off) => off());
}

export function leaseSecondsFlag(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  try {
    return parseSeconds(value, "--lease-duration");
  } catch (err) {
    if (err instanceof DurationError) throw usageError(err.message);
    throw err;
  }
}

export const waitCommand = command("wait", async (argv) => {
  const { values } = parseFlags(argv, {
    lock: { type: "string" },
    claim: { type: "string" },
    timeout: { type: "string" },
    "token-file": { type: "string" },
    priority: { type: "string" },
    "lease-duration": { type: "string" },
    "no-wait": { type: "boolean" },
  });
  if (values.help) {
    console.log(waitHelp);
    return 0;
  }
  if (!values.lock) throw usageError("--lock is required");
  const pod = podIdentity();
  const claimName = values.claim ?? pod.name;
  if (!claimName) throw usageError("--claim NAME is required when POD_NAME is not set (outside a pod, or without the downward API)");
  const timeoutMs = durationFlag(values.timeout, "--timeout");
  const priority = integerFlag(values.priority, "--priority");
  const leaseDurationSeconds = leaseSecondsFlag(values["lease-duration"]);
  const cluster = connect(values);
  if (pod.name && pod.namespace && pod.namespace !== cluster.namespace) {
    throw usageError(`--namespace ${cluster.namespace} is not this pod's namespace (POD_NAMESPACE=${pod.namespace}): a claim can only name a pod in its own namespace`);
  }
  if (pod.name && !pod.uid) {
    console.error(`kubelock wait: POD_UID is not set: claim ${claimName} gets no ownerReference and outlives pod ${pod.name}; set it from the downward API (fieldRef metadata.uid)`);
  }

  const { claim, created, replaced } = await createOrReplaceEnded(cluster, {
    name: claimName, lockName: values.lock, podName: pod.name, podUid: pod.uid, priority, leaseDurationSeconds,
  });
  if (replaced) console.log(`claim ${claimName} had ended (phase ${replaced}); asking again with a new claim of that name`);
  if (!created) console.log(`adopted existing claim ${claimName} in namespace ${cluster.namespace}`);

  const interrupt = new AbortController();
  const unregister = abortOnSignals(interrupt, `waiting for lock ${values.lock}`);
  let granted: LockClaim;
  try {
    granted = await waitForGrant({
      cluster, claimName, lockName: values.lock, timeoutMs, once: values["no-wait"], out: (line) => console.log(line), signal: interrupt.signal,
    });
  } catch (err) {
    // A pod-less claim created here would otherwise hold the lock later with nobody behind it; after a
    // try-once, so would a pod's claim, for a pod that gave up.
    if (created && err instanceof CliError && err.code !== Exit.ClaimEnded && (!claim.spec.podName || err.code === Exit.Busy)) {
      const note = await deleteClaim(cluster, claimName).then(
        () => `claim ${claimName}, created by this command, was deleted`,
        () => `could not delete claim ${claimName}, created by this command: delete it so it does not take the lock later`,
      );
      throw new CliError(`${err.message} (${note})`, err.code);
    }
    throw err;
  } finally {
    unregister();
  }
  const token = granted.status?.fencingToken;
  if (values["token-file"]) {
    if (token === undefined) throw new CliError(`claim ${claimName} is Granted but shows no fencing token`, Exit.Unexpected);
    writeFileAtomic(values["token-file"], token);
  }
  console.log(`granted lock ${values.lock} with fencing token ${token ?? "(none)"}`);
  return Exit.Granted;
});
