/**
 * `kubelock run --lock L -- CMD ARGS...`: holds the lock while a command runs, like flock(1). Creates a
 * heartbeat-mode claim, waits for the grant, runs the command in a process group of its own with
 * KUBELOCK_FENCING_TOKEN set, renews spec.renewTime every third of the lease while it runs, stops the
 * whole group if the grant is lost or by its own deadline when renewals stop being confirmed, and
 * releases the lock once every process of the group is gone (with --hold-at-least, no sooner than that
 * long after the grant).
 */
import { constants } from "node:os";
import { performance } from "node:perf_hooks";
import { watchClaim, type ClaimWatch } from "./claim-watch";
import {
  CliError, COMMON_FLAGS_HELP, EXIT_CODES_HELP, Exit, annotateRelease, command, connect, deleteClaim,
  durationFlag, integerFlag, parseFlags, patchClaim, podIdentity, uniqueClaimName, usageError, type Cluster,
} from "./common";
import { formatDuration } from "./duration";
import { createOrReplaceEnded } from "./ended-claim";
import { grantEnded, startHeartbeat } from "./heartbeat";
import { driftMarginMs, holdDeadline, killAt, renewIntervalMs, type HoldDeadline } from "./hold-deadline";
import { ProcessGroup } from "./process-group";
import { leaseSecondsFlag, TRY_ONCE_ANSWER_MS, waitAsHolder } from "./wait";

export const runHelp = `Usage: kubelock run --lock LOCK [flags] -- COMMAND [ARGS...]

Holds a DistributedLock while COMMAND runs, like flock(1):
  1. creates a LockClaim in heartbeat mode (spec.leaseDurationSeconds) and waits for the grant,
     printing the queue position (kubelock's own messages go to stderr);
  2. once a first renewal is confirmed, runs COMMAND in a process group of its own, with stdin,
     stdout and stderr inherited and KUBELOCK_FENCING_TOKEN, KUBELOCK_LOCK and KUBELOCK_CLAIM in
     its environment;
  3. renews spec.renewTime every third of the lease while it runs (each request times out);
  4. if the grant is lost, sends COMMAND's whole process group SIGTERM, then SIGKILL after
     --grace-period, and exits 4. Lost means: the claim leaves phase Granted or is deleted, or no
     renewal was confirmed for the lease minus a margin (10% of the lease, at least 1s, at most a
     quarter of it), counted on this machine's monotonic clock from the start of the last confirmed
     renewal, so it holds when the API server is unreachable or the connection hangs. SIGKILL then
     comes no later than the lease minus half the margin, whatever --grace-period says;
  5. when COMMAND exits, stops what it left in its process group (SIGTERM, then SIGKILL as above);
  6. with --hold-at-least D, keeps holding the lock (renewing as in 3) until D has passed since the
     grant was seen, so that a run elsewhere that asks within D after the grant finds the lock held;
     a grant lost meanwhile just ends the wait;
  7. releases the lock and exits with COMMAND's exit code (128+N if it was killed by signal N; 127 if
     it could not be started).
SIGINT, SIGTERM and SIGHUP are forwarded to COMMAND's process group; after COMMAND exited, they end
the wait of --hold-at-least: the lock is released at once.

The claim is named --claim NAME, or else LOCK-run-RANDOM: a fresh claim per run, so runs in the
same pod (or a claim made by 'kubelock wait' for the pod) never collide. A claim created here is
deleted at the end (the operator then releases the lock); an existing claim adopted with --claim
is annotated kubelock.io/release instead. An existing claim of that name that has ended (released,
expired, lost, rejected) and that kubelock made is deleted and made anew, so a name can ask again. Inside a pod (POD_NAME, POD_UID from the downward API) the
claim also names the pod and is owned by it, so it ends with the pod whatever happens.

Flags:
      --lock LOCK          the DistributedLock to hold (required)
      --claim NAME         the LockClaim's name (default: LOCK-run-RANDOM)
      --lease-duration D   heartbeat lease, whole seconds (default 15s)
      --timeout D          give up waiting for the grant after this long (default: wait forever);
                           0s means --no-wait
      --no-wait            try once, like flock -n: if the operator queues the claim instead of granting
                           it at once, delete it and exit 7 without running COMMAND (--timeout then
                           bounds the wait for the operator's answer, default ${formatDuration(TRY_ONCE_ANSWER_MS)})
      --priority N         queue priority: higher goes first (default 0)
      --grace-period D     after SIGTERM, SIGKILL after this long (default 10s; capped by the deadline)
      --hold-at-least D    keep the lock until D after the grant, even if COMMAND ends sooner (default 0s)
${COMMON_FLAGS_HELP}

${EXIT_CODES_HELP.replace("  0  success (granted, released, renewed)\n", "  N  COMMAND's own exit code once it ran (0 included); 128+N killed by signal N; 127 not startable\n")}
Codes 1-7 before COMMAND starts mean what they say above; 4 after it started means the grant was
lost and COMMAND was stopped.`;

const FORWARDED = ["SIGINT", "SIGTERM", "SIGHUP"] as const;

/** The flags of the commands that hold a lock in heartbeat mode (`run`, `hold`). */
export const HOLDER_FLAGS = {
  lock: { type: "string" },
  claim: { type: "string" },
  "lease-duration": { type: "string" },
  timeout: { type: "string" },
  priority: { type: "string" },
  "grace-period": { type: "string" },
} as const;

const say = (line: string) => console.error(`kubelock run: ${line}`);

export const runCommand = command("run", async (argv) => {
  const separator = argv.indexOf("--");
  const flagArgs = separator >= 0 ? argv.slice(0, separator) : argv;
  const commandLine = separator >= 0 ? argv.slice(separator + 1) : [];
  const { values } = parseFlags(flagArgs, { ...HOLDER_FLAGS, "hold-at-least": { type: "string" }, "no-wait": { type: "boolean" } } as const);
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
  const holdAtLeastMs = durationFlag(values["hold-at-least"], "--hold-at-least") ?? 0;
  const pod = podIdentity();
  const cluster = connect(values);
  const inPod = pod.name !== undefined && (pod.namespace === undefined || pod.namespace === cluster.namespace);
  const claimName = values.claim ?? uniqueClaimName(lockName, "run");

  const { claim, created, replaced } = await createOrReplaceEnded(cluster, {
    name: claimName, lockName, priority, leaseDurationSeconds: leaseSeconds,
    podName: inPod ? pod.name : undefined, podUid: inPod ? pod.uid : undefined,
  });
  if (replaced) say(`claim ${claimName} had ended (phase ${replaced}); asking again with a new claim of that name`);
  if (!created) {
    say(`adopted existing claim ${claimName}`);
    // A renewTime left from earlier would count against the lease from the moment of the grant.
    if (claim.spec.renewTime && claim.status?.phase !== "Granted") await patchClaim(cluster, claimName, { spec: { renewTime: null } });
  }
  const release = async (via: Cluster) => {
    if (created) await deleteClaim(via, claimName);
    else await annotateRelease(via, claimName).catch((err) => (err instanceof CliError && err.code === Exit.NotFound ? undefined : Promise.reject(err)));
  };

  const granted = await waitAsHolder({ cluster, claimName, lockName, timeoutMs, once: values["no-wait"], out: say, created });
  const holdUntil = performance.now() + holdAtLeastMs;

  const token = granted.status?.fencingToken ?? "";
  const lease = (granted.spec.leaseDurationSeconds ?? leaseSeconds) * 1000;
  // From here on a request that outlasts a renewal interval is useless: renewals decide the deadline.
  const holding: Cluster = { ...cluster, requestTimeoutMs: Math.min(cluster.requestTimeoutMs, renewIntervalMs(lease)) };
  const code = await holdWhileRunning({ cluster: holding, claimName, lockName, token, leaseMs: lease, graceMs, commandLine, holdUntil });
  try {
    await release(holding);
  } catch (err) {
    say(`could not release claim ${claimName}: ${err instanceof Error ? err.message : String(err)}`);
    if (code === 0) return Exit.Unexpected;
  }
  return code;
});

interface HoldOptions {
  /** The cluster whose requests give up within a renewal interval. */
  cluster: Cluster;
  claimName: string;
  lockName: string;
  token: string;
  leaseMs: number;
  graceMs: number;
  commandLine: string[];
  /** Monotonic time (ms) before which the lock is not released after the command exited (--hold-at-least). */
  holdUntil: number;
}

/**
 * Confirms the grant with a first renewal, then runs the command in a process group of its own while
 * renewing and watching the claim; resolves with run's exit code once every process of the group is
 * gone. The grant counts as lost when the claim leaves Granted or when the local deadline passes
 * without a confirmed renewal (hold-deadline.ts); the group then gets SIGTERM, and SIGKILL after the
 * grace period or at the deadline's kill time, whichever comes first. Once the group is gone the grant is
 * kept (still renewed and watched) until `holdUntil`, unless it is lost or a forwarded signal comes first.
 */
function holdWhileRunning(options: HoldOptions): Promise<number> {
  const { cluster, claimName, lockName, token, leaseMs, graceMs, commandLine, holdUntil } = options;
  const name = commandLine[0];
  return new Promise((resolve) => {
    // Until a renewal is confirmed the command does not start; this bounds that wait.
    let deadline: HoldDeadline = holdDeadline(performance.now(), leaseMs);
    let group: ProcessGroup | undefined;
    let lost = false;
    let exitCode: number | undefined;
    let stopping = false;
    let killed = false;
    let killTime = Infinity;
    let done = false;
    /** COMMAND's exit code while the grant is kept after it (--hold-at-least). */
    let lingering: number | undefined;
    const timers: Record<"deadline" | "kill" | "poll" | "linger", NodeJS.Timeout | undefined> =
      { deadline: undefined, kill: undefined, poll: undefined, linger: undefined };

    const armDeadline = () => {
      clearTimeout(timers.deadline);
      timers.deadline = setTimeout(() => {
        if (performance.now() < deadline.stopAt) return armDeadline();
        if (!group) return finish(Exit.Unexpected, `no renewal of claim ${claimName} was confirmed after the grant; not starting ${name}`);
        loseGrant(`no renewal was confirmed for ${formatDuration(leaseMs - driftMarginMs(leaseMs))} (the lease minus a margin of ${formatDuration(driftMarginMs(leaseMs))})`);
      }, Math.max(0, deadline.stopAt - performance.now()));
    };

    const heartbeat = startHeartbeat(cluster, claimName, leaseMs, {
      confirmed: (startedAt) => {
        if (done || lost) return;
        deadline = holdDeadline(startedAt, leaseMs);
        armDeadline();
        if (!group) startCommand();
      },
      ended: (why) => loseGrant(why),
      failed: (message) => say(`renewal failed: ${message}`),
    });
    armDeadline();
    const watch: ClaimWatch = watchClaim(cluster, claimName, (claim) => {
      const ended = grantEnded(claim, claimName);
      if (ended) loseGrant(ended);
    }, (err) => say(`cannot watch claim ${claimName}: ${err.message}; relying on renewals`));

    const forward = new Map<NodeJS.Signals, () => void>();
    for (const sig of FORWARDED) {
      const handler = () => {
        if (lingering !== undefined) finish(lingering, `interrupted by ${sig}; releasing lock ${lockName} now`);
        else if (group) group.signal(sig);
        else finish(128 + constants.signals[sig], `interrupted by ${sig}`);
      };
      forward.set(sig, handler);
      process.on(sig, handler);
    }

    function startCommand() {
      say(`granted lock ${lockName} with fencing token ${token}; running ${commandLine.join(" ")}`);
      const started = new ProcessGroup(commandLine, { ...process.env, KUBELOCK_FENCING_TOKEN: token, KUBELOCK_LOCK: lockName, KUBELOCK_CLAIM: claimName });
      group = started;
      started.child.on("spawn", () => say(`${name} started (pid ${started.id}, its own process group)`));
      started.child.on("error", (err: NodeJS.ErrnoException) => {
        if (started.id !== undefined) return say(`signalling ${name} failed: ${err.message}`);
        say(`cannot run ${name}: ${err.message}`);
        finish(err.code === "EACCES" ? 126 : 127);
      });
      started.child.on("exit", (code, signal) => {
        if (signal) say(`${name} was killed by ${signal}`);
        exitCode = code ?? 128 + (signal ? constants.signals[signal] ?? 0 : 0);
        settleGroup();
      });
    }

    function loseGrant(why: string) {
      if (lost || done) return;
      if (lingering !== undefined) return finish(lingering, `lost lock ${lockName} after ${name} exited: ${why}`);
      lost = true;
      heartbeat.stop();
      clearTimeout(timers.deadline);
      if (!group) return finish(Exit.ClaimEnded, `lost lock ${lockName} before ${name} started: ${why}`);
      say(`lost lock ${lockName}: ${why}; stopping ${name} (SIGTERM to its process group, then SIGKILL within ${formatDuration(graceMs)})`);
      stopGroup();
    }

    /** SIGTERM to the group now (once), SIGKILL after the grace period but no later than the deadline allows. */
    function stopGroup() {
      const now = performance.now();
      if (!stopping) {
        stopping = true;
        group!.signal("SIGTERM");
      }
      const at = killAt(now, graceMs, deadline.killBy);
      if (at >= killTime) return;
      killTime = at;
      clearTimeout(timers.kill);
      timers.kill = setTimeout(() => {
        group!.signal("SIGKILL");
        killed = true;
        settleGroup();
      }, Math.max(0, at - now));
    }

    /** Once the command itself exited: done when its whole group is gone (or was killed); else stop the rest. */
    function settleGroup() {
      if (exitCode === undefined || done || lingering !== undefined) return;
      if (killed || !group!.alive()) return lost ? finish(Exit.ClaimEnded) : keepUntilHoldEnds(exitCode);
      if (!stopping) say(`${name} exited; stopping the processes it left in its process group`);
      stopGroup();
      clearTimeout(timers.poll);
      timers.poll = setTimeout(settleGroup, 100);
    }

    /** COMMAND and its group are gone with the grant held: release now, or once `holdUntil` has come. */
    function keepUntilHoldEnds(code: number) {
      const rest = holdUntil - performance.now();
      if (rest <= 0) return finish(code);
      lingering = code;
      say(`${name} exited; holding lock ${lockName} ${formatDuration(rest)} longer (--hold-at-least)`);
      timers.linger = setTimeout(() => finish(code), rest);
    }

    function finish(code: number, message?: string) {
      if (done) return;
      done = true;
      if (message) say(message);
      heartbeat.stop();
      watch.stop();
      for (const timer of Object.values(timers)) clearTimeout(timer);
      for (const [sig, handler] of forward) process.off(sig, handler);
      resolve(code);
    }
  });
}
