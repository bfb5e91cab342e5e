/**
 * Renewal reports (a lock status write that only records its holders' renewals, due STATUS_REPORT_MS after the
 * last) are spread to at most STATUS_REPORTS_PER_SECOND across the operator, in the order they fall due, so that
 * many held locks cannot crowd grants out of the API server's writes.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { LOCK_PLURAL, STATUS_REPORT_MS, STATUS_REPORTS_PER_SECOND } from "../../src/api/types";
import { ReportSchedule } from "../../src/controllers/report-schedule";
import { World } from "../support/reconciler-world";

test("reservations are 1000 / perSecond ms apart, used once, and dropped by forget", () => {
  const reports = new ReportSchedule(4);
  assert.equal(reports.wait("a", 1000), 0);
  assert.equal(reports.wait("b", 1000), 250);
  assert.equal(reports.wait("c", 1000), 500);
  assert.equal(reports.wait("b", 1100), 150, "asked again before its slot: the same slot");
  reports.forget("c");
  assert.equal(reports.reserved, 1);
  assert.equal(reports.wait("b", 1250), 0);
  assert.equal(reports.reserved, 0);
  assert.equal(reports.wait("d", 1250), 500, "a forgotten slot is not given again");
  assert.equal(reports.wait("e", 9000), 0, "slots that were never asked for are not saved up");
  assert.throws(() => new ReportSchedule(0), /above 0/);
});

test("slots missed while a backlog held the reconciles back are given again, not written all at once", () => {
  // 3,000 locks ask for their slots (the last 150 s ahead); none is reconciled again for 100 s; then all are.
  const reports = new ReportSchedule(20);
  const locks = Array.from({ length: 3000 }, (_, i) => `lock-${i}`);
  for (const lock of locks) reports.wait(lock, 0);
  const writable = locks.filter((lock) => reports.wait(lock, 100_000) === 0);
  assert.ok(writable.length <= 2 * 20, `${writable.length} reports at once after the backlog (slots of ~2 s: at most 40)`);
  assert.ok(writable.length > 0, "the slots of the last second are still good");
  assert.equal(reports.reserved, locks.length - writable.length, "every other lock holds a slot");
});

test("the reports of many held locks due at once are written at most STATUS_REPORTS_PER_SECOND, each in its turn", async () => {
  const world = new World();
  const locks = Array.from({ length: STATUS_REPORTS_PER_SECOND + 10 }, (_, i) => `item-${i}`);
  for (const name of locks) {
    world.lock(name, {}, name);
    world.claim(`claim-${name}`, name);
    await world.reconcile(name);
  }
  const writes = () => world.statusWrites.filter((w) => w.startsWith(`${LOCK_PLURAL}/`)).length;
  const recorded = (name: string) => world.server.locks.get(name)?.status?.holders?.[0]?.renewTime;
  const granted = locks.map(recorded);
  assert.equal(writes(), locks.length, "one lock status write per grant");

  world.clock.advance(STATUS_REPORT_MS + 1000);
  const delays: number[] = [];
  for (const name of locks) delays.push((await world.reconcile(name))?.requeueAfterMs ?? Infinity);
  assert.equal(writes(), locks.length + 1, "every lock's report was due; only the first had its turn");
  const step = 1000 / STATUS_REPORTS_PER_SECOND;
  delays.slice(1).forEach((ms, i) => assert.equal(ms, Math.round((i + 1) * step), `lock ${i + 1} asked to look again in ${ms} ms`));

  world.clock.advance(1000);
  for (const name of locks) await world.reconcile(name);
  assert.equal(writes(), locks.length + 1 + STATUS_REPORTS_PER_SECOND, "one second later, one more second's worth of reports");
  world.clock.advance(1000);
  for (const name of locks) await world.reconcile(name);
  assert.equal(writes(), 2 * locks.length, "in the end every lock reported, once");
  locks.forEach((name, i) => assert.ok(Date.parse(recorded(name)!) > Date.parse(granted[i]!), `${name}'s renewal is recorded`));
});
