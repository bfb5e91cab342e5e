/**
 * The long chaos run (`make test-chaos`): starts a private environment, runs test/chaos/ until
 * CHAOS_GRANTS grants (default 10000) or CHAOS_SECONDS (default 3600) of faults, prints the report and
 * exits 1 if the checker found any violation.
 *
 * Environment: CHAOS_SEED (replay a schedule), CHAOS_BACKENDS (comma list, default all six:
 * kubernetes, redis, redis-sentinel, etcd, zookeeper, postgresql),
 * CHAOS_FAULTS (comma list of fault kinds, see nemesis.ts, or "none" for a baseline without faults), CHAOS_CLUSTERS
 * (1: no second cluster sharing the backends, so no shared-default-config fault; default 2), CHAOS_LEASE_SECONDS (the
 * locks' leaseDurationSeconds, default 3), CHAOS_OPERATOR_LOG_LEVEL
 * (the operators' --log-level, default info), CHAOS_LONG_HOLDS (the share of 1–8 s critical sections that span
 * faults and end early when their claim is Lost; default 0.1).
 */
import { ALL_BACKENDS, availableKinds, defaultChaosOptions, formatReport, runChaos, startChaosEnvironment, type BackendName } from "./runner";
import { FAULT_KINDS, type FaultKind } from "./nemesis";

const list = (name: string): string[] | undefined => process.env[name]?.split(",").map((s) => s.trim()).filter(Boolean);

async function main(): Promise<number> {
  const log = (line: string) => console.error(line);
  const unknown = list("CHAOS_FAULTS")?.filter((f) => f !== "none" && !(FAULT_KINDS as readonly string[]).includes(f)) ?? [];
  if (unknown.length > 0) throw new Error(`CHAOS_FAULTS: unknown fault kinds ${unknown.join(", ")}; known: ${FAULT_KINDS.join(", ")}`);
  const cleanups: (() => Promise<void>)[] = [];
  const environment = await startChaosEnvironment(log);
  cleanups.push(environment.stop);
  let stopping = false;
  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    console.error(`\n${signal}: healing faults and stopping everything`);
    for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
    process.exit(130);
  };
  process.once("SIGINT", () => void shutdown("SIGINT"));
  process.once("SIGTERM", () => void shutdown("SIGTERM"));
  try {
    const defaults = defaultChaosOptions(environment.targets, log);
    const faults = list("CHAOS_FAULTS");
    const available = availableKinds(environment.targets);
    const unavailable = faults?.filter((f) => f !== "none" && !(available as string[]).includes(f)) ?? [];
    if (unavailable.length > 0) throw new Error(`CHAOS_FAULTS: not available here: ${unavailable.join(", ")}; available: ${available.join(", ")}`);
    const kinds = faults?.includes("none") ? [] : (faults as FaultKind[] | undefined) ?? available;
    const report = await runChaos({
      ...defaults,
      grants: Number(process.env.CHAOS_GRANTS ?? 10_000),
      leaseSeconds: Number(process.env.CHAOS_LEASE_SECONDS ?? defaults.leaseSeconds),
      seconds: Number(process.env.CHAOS_SECONDS ?? 3600),
      seed: process.env.CHAOS_SEED ? Number(process.env.CHAOS_SEED) : defaults.seed,
      backends: (list("CHAOS_BACKENDS") as BackendName[] | undefined) ?? ALL_BACKENDS,
      kinds,
      aloneFirst: kinds.length > 0,
      mixedAtLeast: kinds.length > 1 ? 1 : 0,
      // A share of long critical sections spans faults, so holds are lost and the Lost rules are exercised.
      longHolds: { chance: Number(process.env.CHAOS_LONG_HOLDS ?? 0.1), ms: [1000, 8000] },
    }, (cleanup) => cleanups.splice(1, 0, cleanup));
    console.log(formatReport(report));
    return report.violations.length === 0 ? 0 : 1;
  } finally {
    for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
  }
}

main().then(
  (code) => process.exit(code),
  (err: Error) => {
    console.error(`chaos run failed: ${err.stack ?? err.message}`);
    process.exit(1);
  },
);
