/**
 * The chaos checker (test/chaos/checker.ts) on made-up histories: it flags every kind of violation it
 * knows, and nothing in a clean history; the truth round and token checks hold their conservative sides.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { check, excuseDataLoss, judgeRound, tokenOrder, type TruthRound } from "../chaos/checker";
import type { ClaimEvent } from "../chaos/history";
import { FencedRegister } from "../chaos/register";

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
  const histories = [{ cluster: "c1", events }];
  const created = new Map([["late", 100]]);
  const lateGrant = [ev("late", "m", "Granted", "7")]; // created at 100, after "p" (token 9) was seen Granted
  lateGrant[0].t = 200;
  const round: TruthRound = {
    listedAt: 10, readFrom: 11, readTo: 12, relistedAt: 13,
    granted: [{ cluster: "c1", name: "stale", uid: "u1", lock: "m", token: "3" }, { cluster: "c2", name: "orphan", uid: "u2", lock: "s", token: "4" }],
    holds: new Map([["m", [{ holderId: "u9", claim: "other", cluster: "c2", token: "5" }]], ["s", []]]),
  };
  const observed = judgeRound(round, new Map([["m", 1], ["s", 2]]), 0);
  const found = check({ locks, registers, histories: [...histories, { cluster: "c2", events: lateGrant }], records, created, observed, recoveries, t0: 0 });
  const kinds = new Set(found.map((v) => v.kind));
  for (const kind of [
    "register-overlap", "register-order", "duplicate-token", "status-overlap", "status-order", "token-order", "granted-elsewhere", "granted-without-hold",
    "phase-transition", "stuck-claim", "undocumented-end", "no-recovery",
  ]) {
    assert.ok(kinds.has(kind), `the checker missed ${kind}; found ${[...kinds].join(", ")}`);
  }
  // A claim Granted whose hold the backend lists (same UID and token) is no violation.
  const held = { ...round, granted: [{ cluster: "c1", name: "ok", uid: "u9", lock: "m", token: "5" }] };
  assert.deepEqual(judgeRound(held, new Map([["m", 1]]), 0), []);
  // token-order is judged on safe sides of the watch lag: a grant seen after the claim was created does not count.
  assert.deepEqual(tokenOrder([{ cluster: "c1", events: [{ ...lateGrant[0], name: "early", fencingToken: "9", t: 150 }, lateGrant[0]] }], new Map([["late", 100]]), 0), []);
  // Data loss excuses overlaps on its backend's locks in its window, never token checks.
  const { violations, excused } = excuseDataLoss(found, [{ backend: "b-m", from: 0, to: Infinity, what: "wipe" }], new Map([["m", "b-m"]]), 0);
  assert.ok(excused.some((v) => v.kind === "register-overlap") && excused.some((v) => v.kind === "granted-elsewhere"), "overlaps on m are excused");
  assert.ok(violations.some((v) => v.kind === "token-order") && violations.some((v) => v.kind === "status-overlap"), "token checks and other locks stay violations");
  const clean = new FencedRegister("c", 1);
  for (let t = 1n; t <= 3n; t++) clean.leave(clean.enter("w", `c${t}`, t)!);
  assert.deepEqual(check({ locks: [{ name: "c", maxHolders: 1 }], registers: new Map([["c", clean]]), histories: [], records: [], created: new Map(), recoveries: [], t0: 0 }), []);
});

test("an API-server outage excuses only its own cluster's claim-status findings within its window, never a register overlap", () => {
  const v = (kind: string, summary: string, at: number) => ({ kind, lock: "m", at, summary, evidence: [] });
  const found = [
    v("granted-without-hold", "c1/a shown Granted", 1500),
    v("granted-without-hold", "c2/b shown Granted", 1500),
    v("register-overlap", "c1/a and c1/c entered", 1500),
    v("granted-elsewhere", "c1/d shown Granted", 4000),
    v("granted-without-hold", "c1/e shown Granted", 500),
  ];
  const outage = { from: 1000, to: 3000, statusOf: "c1", what: "restart-apiserver" };
  const { violations, excused } = excuseDataLoss(found, [outage], new Map([["m", "etcd"]]), 0);
  assert.deepEqual(excused.map((x) => x.summary.split(" ")[0]), ["c1/a"]);
  assert.deepEqual(violations.map((x) => x.summary.split(" ")[0]), ["c2/b", "c1/a", "c1/d", "c1/e"]);
});

test("a claim being deleted is no longer Granted: the next grant is no status-overlap", () => {
  let seq = 0;
  const ev = (name: string, phase: string, token: string, deleting = false, type: ClaimEvent["type"] = "MODIFIED"): ClaimEvent =>
    ({ seq: seq++, t: seq, type, name, lock: "m", resourceVersion: String(seq), phase, fencingToken: token, deleting });
  const run = (events: ClaimEvent[]) => check({
    locks: [{ name: "m", maxHolders: 1 }], registers: new Map(), histories: [{ cluster: "c1", events }], records: [], created: new Map(), recoveries: [], t0: 0,
  }).map((v) => v.kind);
  assert.deepEqual(run([ev("a", "Granted", "1"), ev("a", "Granted", "1", true), ev("b", "Granted", "2"), ev("a", "Granted", "1", true, "DELETED")]), []);
  assert.deepEqual(run([ev("a", "Granted", "1"), ev("b", "Granted", "2")]), ["status-overlap"], "two claims Granted, neither being deleted");
});
