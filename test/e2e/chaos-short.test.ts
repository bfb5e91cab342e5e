/**
 * A short Jepsen-style run (test/chaos/): workers take turns on a mutex and a semaphore per backend
 * (kubernetes, redis, redis through Sentinel with waitReplicas, etcd, zookeeper, postgresql) through fenced
 * registers, in two clusters sharing the locks of every backend but the Lease one, with `kubelock run` holders
 * on the Lease backend's mutex, while the nemesis injects every fault kind of test/chaos/nemesis.ts (operator
 * kill, pause, rolling replacement, skewed clock, partition of one operator from one server, a half-open
 * `kubelock run` holder, backend pauses, restarts, member and majority losses, Redis restarted empty, a deleted
 * fencing counter, kube-apiserver restart, both clusters on the shipped default config, a Redis Sentinel
 * failover), two at a time and then mixed. The full history must show no violation, and every fault kind must
 * have been injected: the nemesis gives each kind an episode (shared with one other kind) before it heeds
 * `grants`/`seconds`, so they only bound the rest.
 *
 * The checker's own test (every kind of violation in a made-up history) is test/unit/chaos-checker.test.ts.
 * It runs against a private environment (its own control plane and backend servers), so its faults never
 * disturb tests running at the same time. `make test-chaos` is the long run. CHAOS_SEED replays a schedule.
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { availableKinds, defaultChaosOptions, formatReport, runChaos, startChaosEnvironment, type ChaosTargets } from "../chaos/runner";

const log = (line: string) => console.error(`    ${line}`);
let environment: { targets: ChaosTargets; stop: () => Promise<void> } | undefined;
const cleanups: (() => Promise<void>)[] = [];

before(async () => {
  environment = await startChaosEnvironment(log);
});

after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
  await environment?.stop();
});

test("a short chaos run (every fault kind, in pairs and mixed) finds no violation", async () => {
  const targets = environment!.targets;
  const options = defaultChaosOptions(targets, log);
  const report = await runChaos({
    ...options,
    seed: process.env.CHAOS_SEED ? Number(process.env.CHAOS_SEED) : options.seed,
    grants: 300,
    seconds: 10,
    // Two kinds per episode (an operator fault with another, else two that need no operator) until every kind went in: the budget of `make test`.
    pairUp: true,
    maxMix: 2,
    workers: { mutex: 2, semaphore: 3 },
  }, (cleanup) => cleanups.push(cleanup));
  const text = formatReport(report);
  console.log(text);
  assert.equal(report.violations.length, 0, text);
  for (const kind of availableKinds(targets)) assert.ok((report.faults[kind] ?? 0) >= 1, `fault ${kind} was never injected:\n${text}`);
  assert.ok(report.mixedEpisodes >= 1, `no episode mixed faults:\n${text}`);
  assert.ok(report.grants >= 100, `only ${report.grants} grants:\n${text}`);
});
