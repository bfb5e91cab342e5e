/**
 * A short Jepsen-style run (test/chaos/): workers take turns on a mutex and a semaphore per backend
 * (kubernetes, redis, etcd, zookeeper) through fenced registers while the nemesis kills and pauses the
 * leading operator, pauses and restarts backend servers, stops one member and then a majority of the
 * 3-member etcd cluster and ZooKeeper ensemble, and restarts kube-apiserver, each fault alone and then
 * mixed. The full history must show no violation, and every fault kind must have been injected: the
 * nemesis gives each kind its episode alone before it heeds `grants`/`seconds`, so they only bound the rest.
 *
 * It runs against a private environment (its own control plane and backend servers), so its faults never
 * disturb tests running at the same time. `make test-chaos` is the long run. CHAOS_SEED replays a schedule.
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { check } from "../chaos/checker";
import type { ClaimEvent } from "../chaos/history";
import { FencedRegister } from "../chaos/register";
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

test("a short chaos run (every fault kind, alone and mixed) finds no violation", async () => {
  const targets = environment!.targets;
  const options = defaultChaosOptions(targets, log);
  const report = await runChaos({
    ...options,
    seed: process.env.CHAOS_SEED ? Number(process.env.CHAOS_SEED) : options.seed,
    grants: 300,
    seconds: 30,
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

test("the checker flags each kind of violation in a made-up history", () => {
  const locks = [{ name: "m", maxHolders: 1 }, { name: "s", maxHolders: 2 }];
  const registers = new Map(locks.map((l) => [l.name, new FencedRegister(l.name, l.maxHolders)]));
  const m = registers.get("m")!;
  const a = m.enter("w0", "a", 5n)!;
  const b = m.enter("w1", "b", 6n)!; // overlaps a
  m.leave(a);
  m.leave(b);
  assert.equal(m.enter("w2", "stale", 4n), undefined, "a mutex register rejects a token lower than the highest");
  m.leave(m.enter("w2", "dup", 6n)!); // same token again
  let seq = 0;
  const ev = (name: string, lock: string, phase: string | undefined, token?: string, type: ClaimEvent["type"] = "MODIFIED", reason?: string): ClaimEvent =>
    ({ seq: seq++, t: seq, type, name, lock, resourceVersion: String(seq), phase, fencingToken: token, reason, deleting: false });
  const events = [
    ev("x", "s", "Granted", "1"), ev("y", "s", "Granted", "2"), ev("z", "s", "Granted", "3"), // 3 of 2
    ev("p", "m", "Granted", "9"), ev("p", "m", "Released", "9", "MODIFIED", "Released"), ev("q", "m", "Granted", "8"), // order
    ev("p", "m", "Granted", "9"), // out of a terminal phase
    ev("q", "m", "Pending", "8"), // Granted back to Pending
  ];
  const records = [
    { name: "stuck", lock: "m", worker: "w", created: 0, outcome: "stuck" as const },
    { name: "odd", lock: "m", worker: "w", created: 0, outcome: "ended" as const, phase: "Lost", reason: "Released" },
  ];
  const recoveries = [{ episode: 1, faults: "x", healedAt: 0, byLock: new Map([["m", undefined]]), longest: Infinity }];
  const kinds = new Set(check({ locks, registers, events, records, recoveries, t0: 0 }).map((v) => v.kind));
  for (const kind of ["register-overlap", "register-order", "duplicate-token", "status-overlap", "status-order", "phase-transition", "stuck-claim", "undocumented-end", "no-recovery"]) {
    assert.ok(kinds.has(kind), `the checker missed ${kind}; found ${[...kinds].join(", ")}`);
  }
  const clean = new FencedRegister("c", 1);
  for (let t = 1n; t <= 3n; t++) clean.leave(clean.enter("w", `c${t}`, t)!);
  assert.deepEqual(check({ locks: [{ name: "c", maxHolders: 1 }], registers: new Map([["c", clean]]), events: [], records: [], recoveries: [], t0: 0 }), []);
});
