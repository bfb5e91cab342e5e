/** The watch fallback of Redis and PostgreSQL: holders read now and then, a change reported. */
import assert from "node:assert/strict";
import { test } from "node:test";
import type { Hold } from "../../src/backends/backend";
import { HoldersPoll } from "../../src/backends/kit/holders-poll";

const hold = (holderId: string, fencingToken: string): Hold => ({ holderId, claim: holderId, holderIdentity: holderId, cluster: "", fencingToken, acquireTime: "", renewTime: "" });

/** A poll over `holders` (changed by the test), every 5 ms; `reports` counts changed() calls, `reads` the reads. */
function poll(holders: Hold[][]) {
  const counts = { reports: 0, reads: 0 };
  const watch = new HoldersPoll(async () => (counts.reads++, holders[0]), () => counts.reports++, 5);
  const readsReach = async (n: number) => {
    while (counts.reads < n) await new Promise((resolve) => setImmediate(resolve));
    await new Promise((resolve) => setImmediate(resolve)); // the read's result is compared
  };
  return { counts, watch, readsReach };
}

test("the first read is reported: the watcher's own read came before the watch, and a change between would be lost", async () => {
  // The watcher saw one hold; it is released before the poll's first read: that read must wake the watcher.
  const { counts, watch, readsReach } = poll([[]]);
  await readsReach(1);
  watch.stop();
  assert.equal(counts.reports, 1);
});

test("later reads report only a change: another holder, another token of the same holder", async () => {
  const holders: Hold[][] = [[hold("a", "1")]];
  const { counts, watch, readsReach } = poll(holders);
  await readsReach(3);
  assert.equal(counts.reports, 1, "unchanged reads reported");
  holders[0] = [hold("a", "2")];
  await readsReach(counts.reads + 2);
  assert.equal(counts.reports, 2, "a new token of the same holder not reported");
  holders[0] = [hold("b", "3")];
  await readsReach(counts.reads + 2);
  watch.stop();
  assert.equal(counts.reports, 3, "another holder not reported");
});
