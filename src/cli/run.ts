/**
 * `kubelock run --lock L -- CMD ARGS...`: holds the lock while a command runs, like flock(1). Creates a
 * heartbeat-mode claim, waits for the grant, runs the command with KUBELOCK_FENCING_TOKEN set, renews
 * spec.renewTime every third of the lease while it runs, stops it if the grant is lost, and releases
 * the lock when it ends.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { constants } from "node:os";
import type { LockClaim } from "../api/types";
import { watchClaim, type ClaimWatch } from "./claim-watch";
import {
  CliError, COMMON_FLAGS_HELP, EXIT_CODES_HELP, Exit, annotateRelease, command, connect, createOrAdoptClaim, deleteClaim,
  describeError, durationFlag, grantedCondition, integerFlag, parseFlags, patchClaim, podIdentity, renewClaim, usageError,
  type Cluster,
} from "./common";
import { formatDuration } from "./duration";
import { abortOnSignals, leaseSecondsFlag, waitForGrant } from "./wait";

export const runHelp = `Usage: kubelock run --lock LOCK [flags] -- COMMAND [ARGS...]

Holds a DistributedLock while COMMAND runs, like flock(1):
  1. creates a LockClaim in heartbeat mode (spec.leaseDurationSeconds) and waits for the grant,
     printing the queue position (kubelock's own messages go to stderr);
  2. runs COMMAND with stdin, stdout and stderr inherited and KUBELOCK_FENCING_TOKEN,
     KUBELOCK_LOCK and KUBELOCK_CLAIM in its environment;
  3. renews spec.renewTime every third of the lease while it runs;
  4. if the grant is lost (the claim leaves phase Granted, is deleted, or cannot be renewed within
     the lease), sends COMMAND SIGTERM, then SIGKILL after --grace-period, and exits 4;
  5. when COMMAND exits, releases the lock and exits with COMMAND's exit code (128+N if it was
     killed by signal N; 127 if it could not be started).
SIGINT, SIGTERM and SIGHUP are forwarded to COMMAND.

The claim is named --claim NAME, or else LOCK-run-RANDOM: a fresh claim per run, so runs in the
same pod (or a claim made by 'kubelock wait' for the pod) never collide. A claim created here is
deleted at the end (its finalizer releases the lock first); an existing claim adopted with --claim
is annotated kubelock.io/release instead. Inside a pod (POD_NAME, POD_UID from the downward API) the
claim also names the pod and is owned by it, so it ends with the pod whatever happens.

Flags:
      --lock LOCK          the DistributedLock to hold (required)
      --claim NAME         the LockClaim's name (default: LOCK-run-RANDOM)
      --lease-duration D   heartbeat lease, whole seconds (default 15s)
      --timeout D          give up waiting for the grant after this long (default: wait forever)
      --priority N         queue priority: higher goes first (default 0)
      --grace-period D     after SIGTERM on a lost grant, SIGKILL after this long (default 10s)
${COMMON_FLAGS_HELP}

${EXIT_CODES_HELP.replace("  0  success (granted, released, renewed)\n", "  N  COMMAND's own exit code once it ran (0 included); 128+N killed by signal N; 127 not startable\n")}
Codes 1-6 before COMMAND starts mean what they say above; 4 after it started means the grant was
lost and COMMAND was stopped.`;

const FORWARDED = ["SIGINT", "SIGTERM", "SIGHUP"] as const;

function runClaimName(lock: string): string {
  const suffix = `-run-${randomBytes(4).toString("hex")}`;
  return `${lock.slice(0, 253 - suffix.length).replace(/[.-]+$/, "")}${suffix}`;
}

const say = (line: string) => console.error(`kubelock run: ${line}`);

export const runCommand = command("run", async (argv) => {
  const separator = argv.indexOf("--");
  const flagArgs = separator >= 0 ? argv.slice(0, separator) : argv;
  const commandLine = separator >= 0 ? argv.slice(separator + 1) : [];
  const { values } = parseFlags(flagArgs, {
    lock: { type: "string" },
    claim: { type: "string" },
    "lease-duration": { type: "string" },
    timeout: { type: "string" },
    priority: { type: "string" },
    "grace-period": { type: "string" },
  });
  if (values.help) {
    console.log(runHelp);
    return 0;
  }
  if (!values.lock) throw usageError("--lock is required");
  if (commandLine.length === 0) throw usageError("missing the command: kubelock run --lock LOCK -- COMMAND [ARGS...]");
  const lockName = values.lock;
  const leaseSeconds = leaseSecondsFlag(values["lease-duration"]) ?? 15;
  const timeoutMs = durationFlag(values.timeout, "--timeout");
  const priority = integerFlag(values.priority, "--priority");
  const graceMs = durationFlag(values["grace-period"], "--grace-period") ?? 10_000;
  const pod = podIdentity();
  const cluster = connect(values);
  const inPod = pod.name !== undefined && (pod.namespace === undefined || pod.namespace === cluster.namespace);
  const claimName = values.claim ?? runClaimName(lockName);

  const { claim, created } = await createOrAdoptClaim(cluster, {
    name: claimName, lockName, priority, leaseDurationSeconds: leaseSeconds,
    podName: inPod ? pod.name : undefined, podUid: inPod ? pod.uid : undefined,
  });
  if (!created) {
    say(`adopted existing claim ${claimName}`);
    // A renewTime left from earlier would count against the lease from the moment of the grant.
    if (claim.spec.renewTime && claim.status?.phase !== "Granted") await patchClaim(cluster, claimName, { spec: { renewTime: null } });
  }
  const release = async () => {
    if (created) await deleteClaim(cluster, claimName);
    else await annotateRelease(cluster, claimName).catch((err) => (err instanceof CliError && err.code === Exit.NotFound ? undefined : Promise.reject(err)));
  };

  // Waiting: an interrupt or a failure deletes the claim this command created.
  const interrupt = new AbortController();
  const unregister = abortOnSignals(interrupt, `waiting for lock ${lockName}`);
  let granted: LockClaim;
  try {
    granted = await waitForGrant({ cluster, claimName, lockName, timeoutMs, out: say, signal: interrupt.signal });
  } catch (err) {
    if (created) await deleteClaim(cluster, claimName).catch((e) => say(`could not delete claim ${claimName}: ${describeError(e)}`));
    throw err;
  } finally {
    unregister();
  }

  const token = granted.status?.fencingToken ?? "";
  const lease = (granted.spec.leaseDurationSeconds ?? leaseSeconds) * 1000;
  const code = await holdWhileRunning({ cluster, claimName, lockName, token, leaseMs: lease, graceMs, commandLine });
  try {
    await release();
  } catch (err) {
    say(`could not release claim ${claimName}: ${err instanceof Error ? err.message : String(err)}`);
    if (code === 0) return Exit.Unexpected;
  }
  return code;
});

interface HoldOptions {
  cluster: Cluster;
  claimName: string;
  lockName: string;
  token: string;
  leaseMs: number;
  graceMs: number;
  commandLine: string[];
}

/** Runs the command while heartbeating and watching the grant; resolves with run's exit code. */
function holdWhileRunning(options: HoldOptions): Promise<number> {
  const { cluster, claimName, lockName, token, leaseMs, graceMs, commandLine } = options;
  return new Promise((resolve) => {
    let lost = false;
    let killTimer: NodeJS.Timeout | undefined;
    let lastRenewed = Date.now();
    let stopped = false;

    say(`granted lock ${lockName} with fencing token ${token}; running ${commandLine.join(" ")}`);
    const child: ChildProcess = spawn(commandLine[0], commandLine.slice(1), {
      stdio: "inherit",
      env: { ...process.env, KUBELOCK_FENCING_TOKEN: token, KUBELOCK_LOCK: lockName, KUBELOCK_CLAIM: claimName },
    });
    child.on("spawn", () => say(`${commandLine[0]} started (pid ${child.pid})`));
    child.on("error", (err: NodeJS.ErrnoException) => {
      if (child.pid !== undefined) return say(`signalling ${commandLine[0]} failed: ${err.message}`);
      say(`cannot run ${commandLine[0]}: ${err.message}`);
      finish(err.code === "EACCES" ? 126 : 127);
    });
    child.on("exit", (code, signal) => {
      if (signal) say(`${commandLine[0]} was killed by ${signal}`);
      finish(code ?? 128 + (signal ? constants.signals[signal] ?? 0 : 0));
    });

    const loseGrant = (why: string) => {
      if (lost || stopped) return;
      lost = true;
      say(`lost lock ${lockName}: ${why}; stopping ${commandLine[0]} (SIGTERM, then SIGKILL after ${formatDuration(graceMs)})`);
      if (child.exitCode === null && child.signalCode === null) {
        child.kill("SIGTERM");
        killTimer = setTimeout(() => child.kill("SIGKILL"), graceMs);
      }
    };

    // The heartbeat: now, then every third of the lease. Without a renewal for a whole lease, the
    // operator may have ended the grant unseen (API server unreachable): treat it as lost.
    const heartbeat = async () => {
      try {
        const claim = await renewClaim(cluster, claimName);
        lastRenewed = Date.now();
        if (claim.status?.phase !== "Granted") loseGrant(describePhase(claim));
      } catch (err) {
        if (err instanceof CliError && err.code === Exit.NotFound) return loseGrant(`claim ${claimName} was deleted`);
        say(`renewal failed: ${err instanceof Error ? err.message : String(err)}`);
        if (Date.now() - lastRenewed >= leaseMs) loseGrant(`no renewal succeeded within the ${formatDuration(leaseMs)} lease`);
      }
    };
    void heartbeat();
    const renewTimer = setInterval(() => void heartbeat(), Math.max(100, Math.floor(leaseMs / 3)));

    const watch: ClaimWatch = watchClaim(cluster, claimName, (claim) => {
      if (!claim) loseGrant(`claim ${claimName} was deleted`);
      else if (claim.status?.phase !== "Granted") loseGrant(describePhase(claim));
    }, (err) => say(`cannot watch claim ${claimName}: ${err.message}; relying on renewals`));

    const forward = new Map<NodeJS.Signals, () => void>();
    for (const sig of FORWARDED) {
      const handler = () => void child.kill(sig);
      forward.set(sig, handler);
      process.on(sig, handler);
    }

    function finish(code: number) {
      if (stopped) return;
      stopped = true;
      clearInterval(renewTimer);
      if (killTimer) clearTimeout(killTimer);
      watch.stop();
      for (const [sig, handler] of forward) process.off(sig, handler);
      resolve(lost ? Exit.ClaimEnded : code);
    }
  });
}

function describePhase(claim: LockClaim): string {
  const condition = grantedCondition(claim);
  return `claim ${claim.metadata.name} is now ${claim.status?.phase ?? "without a phase"}${condition ? ` (${condition.reason}: ${condition.message})` : ""}`;
}
