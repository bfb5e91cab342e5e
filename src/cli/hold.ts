/**
 * `kubelock hold --lock L`: a native sidecar (an init container with `restartPolicy: Always`) that holds a
 * lock for its pod and stops the pod's work when the grant is lost. Waits for the grant, confirms it with a
 * first renewal, writes the fencing token (the container's startup probe waits for that file, so the pod's
 * main containers start only once the lock is held), then renews the claim's heartbeat. When the grant is lost
 * (the claim leaves Granted or is deleted, or no renewal was confirmed for the lease minus a margin, whatever
 * the API server does) it removes the token file and stops every process of the pod's other containers,
 * seen through the pod's shared process namespace: SIGTERM, then SIGKILL after the grace period, no later
 * than the hold's own deadline; it keeps them stopped until the pod ends. On SIGTERM (the pod ending, after
 * its main containers) it releases the lock.
 */
import { rmSync } from "node:fs";
import { performance } from "node:perf_hooks";
import { watchClaim } from "./claim-watch";
import {
  CliError, COMMON_FLAGS_HELP, EXIT_CODES_HELP, Exit, command, connect, createOrAdoptClaim, deleteClaim, describeError,
  durationFlag, integerFlag, parseFlags, podIdentity, usageError, type Cluster,
} from "./common";
import { formatDuration } from "./duration";
import { grantEnded, startHeartbeat } from "./heartbeat";
import { driftMarginMs, holdDeadline, killAt, renewIntervalMs, type HoldDeadline } from "./hold-deadline";
import { PodProcesses } from "./pod-processes";
import { HOLDER_FLAGS } from "./run";
import { leaseSecondsFlag, waitAsHolder, writeFileAtomic } from "./wait";

export const holdHelp = `Usage: kubelock hold --lock LOCK --token-file FILE [flags]

Holds a DistributedLock for this pod as a native sidecar (an init container with restartPolicy: Always,
in a pod with shareProcessNamespace: true), and stops the pod's work if the grant is lost:
  1. creates (or adopts) the pod's LockClaim in heartbeat mode and waits for the grant;
  2. once a first renewal is confirmed, writes the fencing token to --token-file. Give the container a
     startupProbe that checks the file: the pod's main containers start only after it succeeds;
  3. renews spec.renewTime every third of the lease;
  4. if the grant is lost (the claim leaves Granted or is deleted, or no renewal was confirmed for the
     lease minus a margin, counted on this machine's clock, so it holds when the API server is away),
     removes the token file and sends SIGTERM to every process of the pod's other containers, SIGKILL
     after --grace-period (and no later than the lease minus half the margin), and keeps them stopped
     until the pod ends; exits 4 when it is then stopped;
  5. on SIGTERM (the pod ending, after its main containers) releases the lock and exits 0.
The containers must run as the same user (signals need it). The claim is named after the pod (--claim
to change), names the pod and is owned by it (POD_NAME, POD_NAMESPACE, POD_UID from the downward API).

Flags:
      --lock LOCK          the DistributedLock to hold (required)
      --token-file FILE    where to write the fencing token once the grant is confirmed (required)
      --claim NAME         the LockClaim's name (default: POD_NAME)
      --lease-duration D   heartbeat lease, whole seconds (default 15s)
      --timeout D          give up waiting for the grant after this long (default: wait forever)
      --priority N         queue priority: higher goes first (default 0)
      --grace-period D     after SIGTERM, SIGKILL after this long (default 10s; capped by the deadline)
${COMMON_FLAGS_HELP}

${EXIT_CODES_HELP}`;

const say = (line: string) => console.error(`kubelock hold: ${line}`);
/** How often the pod's other processes are stopped again after a loss (a restarted container must not work). */
const RESTOP_MS = 1000;

export const holdCommand = command("hold", async (argv) => {
  const { values } = parseFlags(argv, { ...HOLDER_FLAGS, "token-file": { type: "string" } } as const);
  if (values.help) {
    console.log(holdHelp);
    return 0;
  }
  if (!values.lock) throw usageError("--lock is required");
  const tokenFile = values["token-file"];
  if (!tokenFile) throw usageError("--token-file is required: the pod's startup probe and main containers read the token there");
  const pod = podIdentity();
  if (!pod.name || !pod.uid) throw usageError("kubelock hold runs in a pod: set POD_NAME and POD_UID from the downward API");
  const processes = new PodProcesses();
  if (!processes.shared()) {
    throw usageError("this container does not share the pod's process namespace, so a lost grant could not stop the pod's work: set shareProcessNamespace: true");
  }
  const leaseMs = (leaseSecondsFlag(values["lease-duration"]) ?? 15) * 1000;
  const timeoutMs = durationFlag(values.timeout, "--timeout");
  const priority = integerFlag(values.priority, "--priority");
  const graceMs = durationFlag(values["grace-period"], "--grace-period") ?? 10_000;
  const cluster = connect(values);
  if (pod.namespace && pod.namespace !== cluster.namespace) throw usageError(`--namespace ${cluster.namespace} is not this pod's namespace (${pod.namespace})`);
  const claimName = values.claim ?? pod.name;
  const lockName = values.lock;

  const { created } = await createOrAdoptClaim(cluster, {
    name: claimName, lockName, priority, leaseDurationSeconds: leaseMs / 1000, podName: pod.name, podUid: pod.uid,
  });
  const granted = await waitAsHolder({ cluster, claimName, lockName, timeoutMs, out: say, created });
  const token = granted.status?.fencingToken;
  if (!token) throw new CliError(`claim ${claimName} is Granted but shows no fencing token`, Exit.Unexpected);
  const holding = { ...cluster, requestTimeoutMs: Math.min(cluster.requestTimeoutMs, renewIntervalMs(leaseMs)) };
  const lost = await holdUntilTerminated({ claimName, lockName, token, tokenFile, leaseMs, graceMs, processes, cluster: holding });
  try {
    if (created) await deleteClaim(holding, claimName);
  } catch (err) {
    say(`could not release claim ${claimName}: ${describeError(err)}`);
    return Exit.Unexpected;
  }
  return lost ? Exit.ClaimEnded : 0;
});

interface HoldOptions {
  cluster: Cluster;
  claimName: string;
  lockName: string;
  token: string;
  tokenFile: string;
  leaseMs: number;
  graceMs: number;
  processes: PodProcesses;
}

/** Holds until SIGTERM/SIGINT; resolves whether the grant was lost meanwhile (and the pod's work stopped). */
function holdUntilTerminated(o: HoldOptions): Promise<boolean> {
  return new Promise((resolve) => {
    let deadline: HoldDeadline = holdDeadline(performance.now(), o.leaseMs);
    let written = false;
    let lost = false;
    const timers: NodeJS.Timeout[] = [];
    let deadlineTimer: NodeJS.Timeout | undefined;

    const armDeadline = () => {
      clearTimeout(deadlineTimer);
      deadlineTimer = setTimeout(() => {
        if (performance.now() < deadline.stopAt) return armDeadline();
        const margin = driftMarginMs(o.leaseMs);
        loseGrant(`no renewal was confirmed for ${formatDuration(o.leaseMs - margin)} (the lease minus a margin of ${formatDuration(margin)})`);
      }, Math.max(0, deadline.stopAt - performance.now()));
    };
    const heartbeat = startHeartbeat(o.cluster, o.claimName, o.leaseMs, {
      confirmed: (startedAt) => {
        if (lost) return;
        deadline = holdDeadline(startedAt, o.leaseMs);
        armDeadline();
        if (written) return;
        writeFileAtomic(o.tokenFile, o.token);
        written = true;
        say(`granted lock ${o.lockName} with fencing token ${o.token}; wrote ${o.tokenFile}`);
      },
      ended: (why) => loseGrant(why),
      failed: (message) => say(`renewal failed: ${message}`),
    });
    armDeadline();
    const watch = watchClaim(o.cluster, o.claimName, (claim) => {
      const ended = grantEnded(claim, o.claimName);
      if (ended) loseGrant(ended);
    }, (err) => say(`cannot watch claim ${o.claimName}: ${err.message}; relying on renewals`));

    function loseGrant(why: string) {
      if (lost) return;
      lost = true;
      heartbeat.stop();
      clearTimeout(deadlineTimer);
      rmSync(o.tokenFile, { force: true });
      const now = performance.now();
      const killIn = killAt(now, o.graceMs, deadline.killBy) - now;
      say(`lost lock ${o.lockName}: ${why}; stopping the pod's other containers (SIGTERM, then SIGKILL within ${formatDuration(Math.max(0, killIn))})`);
      stop("SIGTERM");
      timers.push(setTimeout(() => {
        stop("SIGKILL");
        timers.push(setInterval(() => stop("SIGKILL"), RESTOP_MS));
      }, Math.max(0, killIn)));
    }

    function stop(signal: NodeJS.Signals) {
      const { signalled, refused } = o.processes.signal(signal);
      if (signalled > 0 || refused.length > 0) say(`${signal} to ${signalled} process(es)${refused.length ? `; refused: ${refused.join(", ")}` : ""}`);
    }

    const onTerminate = (signal: NodeJS.Signals) => {
      say(`${signal}: the pod is ending; releasing lock ${o.lockName}`);
      heartbeat.stop();
      watch.stop();
      clearTimeout(deadlineTimer);
      for (const timer of timers) clearTimeout(timer);
      process.off("SIGTERM", onTerminate);
      process.off("SIGINT", onTerminate);
      rmSync(o.tokenFile, { force: true });
      resolve(lost);
    };
    process.on("SIGTERM", onTerminate);
    process.on("SIGINT", onTerminate);
  });
}
