/** `kubelock operator`: runs the controllers until SIGTERM or SIGINT (restarting in-process as a follower when leadership is lost). */
import { randomBytes } from "node:crypto";
import { hostname } from "node:os";
import { parseArgs } from "node:util";
import { ConfigError, loadConfig } from "../config";
import { parseBindAddress } from "../health";
import { createLogger, type Level, type Logger } from "../log";
import { startOperator, type LeaderElectionOptions, type RunningOperator } from "../operator";
import { leaderElectionProblems } from "../runtime/leaderelection";
import { parseDuration } from "./duration";
import { loadKubeConfig } from "./kubeconfig";
import { NAMESPACE_NAME, namespaceList } from "./namespaces";

export const operatorHelp = `Usage: kubelock operator [flags]

Runs the kubelock controllers: grants LockClaims on DistributedLocks through the configured backends.

Flags:
  --config FILE        operator config (YAML; a regular file of at most 1 MiB); default: only the
                       built-in kubernetes backend
  --kubeconfig FILE    default: KUBECONFIG, then ~/.kube/config, then in-cluster
  --watch-namespace NS only these namespaces' locks, claims and pods (default: all); comma-separated
                       names, and the flag may be repeated (--watch-namespace a,b --watch-namespace c)
  --log-level LEVEL    debug | info | error (default info)
  --metrics-bind-address ADDR       Prometheus /metrics on host:port or :port (default :8080; 0 disables)
  --metrics-per-lock                label the holders/waiting gauges per lock (default: totals only)
  --health-probe-bind-address ADDR  /healthz and /readyz (default :8081; 0 disables)
  --leader-elect                    run the controllers only in the replica holding the leader Lease
                                    (default false; set it when running more than one replica)
  --leader-elect-namespace NS       the Lease's namespace (default POD_NAMESPACE, else kubelock-system)
  --leader-elect-id NAME            the Lease's name (default kubelock-operator)
  --leader-elect-lease-duration D   followers take over after the leader was silent this long (default 15s)
  --leader-elect-renew-deadline D   the leader steps down if it could not renew for this long (default 10s)
  --leader-elect-retry-period D     time between acquire/renew attempts (default 2s)
                                    (the --leader-elect-* flags are refused without --leader-elect)
  -h, --help           this help

Namespaces: with --watch-namespace the operator lists and watches locks, claims and pods in each
namespace named, on its own (one set of informers per namespace), so Roles in those namespaces
suffice; it needs no cluster-wide permission on them.

Durations are written like 15s, 500ms, 1m. The election identity is POD_NAME (else the hostname)
plus a random suffix. A replica that loses leadership stops its workers, waits for in-flight
reconciles and starts afresh as a follower in the same process; the old instance keeps renewing
the holds it knows until the new one has synced its caches, so an API server outage longer than
the renew deadline does not leave them unrenewed.

Exit codes: 0 stopped by a signal, 1 runtime failure, 2 bad flags or config.`;

/** The flags that only mean something with `--leader-elect`. */
const LEADER_ELECTION_SETTINGS = [
  "leader-elect-namespace", "leader-elect-id", "leader-elect-lease-duration", "leader-elect-renew-deadline", "leader-elect-retry-period",
] as const;

export async function operatorCommand(argv: string[]): Promise<number> {
  // tokens: which flags were given, since the defaults below make every value look set.
  const { values, tokens } = parseArgs({
    args: argv,
    tokens: true,
    options: {
      config: { type: "string" },
      kubeconfig: { type: "string" },
      "watch-namespace": { type: "string", multiple: true },
      "log-level": { type: "string", default: "info" },
      "metrics-bind-address": { type: "string", default: ":8080" },
      "metrics-per-lock": { type: "boolean", default: false },
      "health-probe-bind-address": { type: "string", default: ":8081" },
      "leader-elect": { type: "boolean", default: false },
      "leader-elect-namespace": { type: "string" },
      "leader-elect-id": { type: "string", default: "kubelock-operator" },
      "leader-elect-lease-duration": { type: "string", default: "15s" },
      "leader-elect-renew-deadline": { type: "string", default: "10s" },
      "leader-elect-retry-period": { type: "string", default: "2s" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    console.log(operatorHelp);
    return 0;
  }
  // Every flag mistake is reported, one line each, before anything starts.
  const problems: string[] = [];
  const level = values["log-level"] as Level;
  if (!["debug", "info", "error"].includes(level)) problems.push(`--log-level must be debug, info or error, not "${level}"`);
  const bind = (flag: "metrics-bind-address" | "health-probe-bind-address") => attempt(problems, () => parseBindAddress(values[flag]!), `--${flag}`);
  const metricsAddress = bind("metrics-bind-address");
  const healthAddress = bind("health-probe-bind-address");
  const leaderElection = values["leader-elect"] ? leaderElectionFlags(values, problems) : undefined;
  // A replica given election settings but not --leader-elect would run the controllers at once, as a second
  // active operator beside the elected leader.
  const given = new Set(tokens.flatMap((t) => (t.kind === "option" ? [t.name] : [])));
  const electionFlags = LEADER_ELECTION_SETTINGS.filter((flag) => given.has(flag)).map((flag) => `--${flag}`);
  if (!values["leader-elect"] && electionFlags.length > 0) {
    problems.push(`${electionFlags.join(", ")} given without --leader-elect: without it this replica runs the controllers at once, beside any elected leader; add --leader-elect or remove ${electionFlags.length > 1 ? "them" : "it"}`);
  }
  const watched = namespaceList("watch-namespace", values["watch-namespace"]);
  problems.push(...watched.problems);
  if (problems.length > 0) {
    console.error(`kubelock operator: invalid flags:\n${problems.map((p) => `  - ${p}`).join("\n")}`);
    return 2;
  }
  let config;
  try {
    config = await loadConfig(values.config);
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(err.message);
      return 2;
    }
    throw err;
  }
  const log = createLogger(level, { logger: "kubelock" });
  const signalled = new Promise<void>((resolve) => {
    process.once("SIGTERM", resolve);
    process.once("SIGINT", resolve);
  });
  let stopped = false;
  void signalled.then(() => (stopped = true));
  const start = (clusterName?: string) => startOperator({
    kubeConfig: loadKubeConfig(values.kubeconfig), config: clusterName ? { ...config, clusterName } : config, log,
    namespaces: watched.namespaces, ownNamespace: process.env.POD_NAMESPACE || undefined,
    leaderElection: leaderElection && { ...leaderElection, identity: electionIdentity() },
    metricsAddress, healthAddress, metricsPerLock: values["metrics-per-lock"],
  });
  let operator = await start();
  log.info("operator started", {
    pid: process.pid, namespaces: watched.namespaces.length > 0 ? watched.namespaces : "all",
    defaultBackend: config.defaultBackend, clusterName: operator.clusterName, backends: config.backends.map((b) => b.name),
    ...(leaderElection && { identity: operator.identity, lease: `${leaderElection.lease.namespace}/${leaderElection.lease.name}` }),
  });
  while (!stopped) {
    if (await Promise.race([signalled.then(() => true), operator.lost.then(() => false)])) break;
    // A clean follower, started before this instance stops: until its caches have synced (the API server
    // may be away), this instance's renewals keep the holds it knows alive. Same cluster name: deriving it
    // again would need the API server.
    log.error("restarting as a follower; the old instance renews its holds until the new one has synced its caches");
    const successor = await startAgain(() => start(operator.clusterName), log, signalled);
    if (successor) {
      log.info("operator restarted", { identity: successor.identity });
      await Promise.race([successor.ready.catch(() => undefined), signalled]);
    }
    await operator.stop();
    log.info("the old instance stopped");
    if (!successor) return 0;
    operator = successor;
  }
  log.info("stopping");
  await operator.stop();
  log.info("stopped");
  return 0;
}

/** Retries `start` (a second apart) until it succeeds or a signal comes (then undefined). */
async function startAgain(start: () => Promise<RunningOperator>, log: Logger, signalled: Promise<void>): Promise<RunningOperator | undefined> {
  let stop = false;
  void signalled.then(() => (stop = true));
  while (!stop) {
    try {
      return await start();
    } catch (err) {
      log.error("could not start the follower instance; retrying", { error: err instanceof Error ? err.message : String(err) });
      await Promise.race([new Promise((resolve) => setTimeout(resolve, 1000)), signalled]);
    }
  }
  return undefined;
}

/** POD_NAME (else the hostname) plus a random suffix: each instance of the process campaigns as itself. */
const electionIdentity = () => `${process.env.POD_NAME || hostname()}_${randomBytes(4).toString("hex")}`;

function leaderElectionFlags(values: Record<string, string | boolean | string[] | undefined>, problems: string[]): LeaderElectionOptions | undefined {
  const duration = (flag: string) => attempt(problems, () => parseDuration(String(values[flag]), `--${flag}`));
  const settings = {
    identity: electionIdentity(),
    leaseDurationMs: duration("leader-elect-lease-duration"),
    renewDeadlineMs: duration("leader-elect-renew-deadline"),
    retryPeriodMs: duration("leader-elect-retry-period"),
  };
  const before = problems.length;
  if ([settings.leaseDurationMs, settings.renewDeadlineMs, settings.retryPeriodMs].every((ms) => ms !== undefined)) {
    problems.push(...leaderElectionProblems(settings).map((p) => `--leader-elect: ${p}`));
  }
  const name = String(values["leader-elect-id"]);
  const namespace = String(values["leader-elect-namespace"] ?? (process.env.POD_NAMESPACE || "kubelock-system"));
  if (!/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/.test(name)) problems.push(`--leader-elect-id "${name}" must be a valid object name`);
  if (!NAMESPACE_NAME.test(namespace)) problems.push(`--leader-elect-namespace "${namespace}" must be a namespace name`);
  return problems.length > before ? undefined : { ...settings, lease: { namespace, name } };
}

/** `parse()`, or undefined with its error message added to `problems`. */
function attempt<T>(problems: string[], parse: () => T, prefix?: string): T | undefined {
  try {
    return parse();
  } catch (err) {
    problems.push(`${prefix ? `${prefix}: ` : ""}${err instanceof Error ? err.message : String(err)}`);
    return undefined;
  }
}
