/**
 * The informer's periodic resync is spread over its period: every cached object is re-emitted (as an update
 * with `old === obj`) once per period, a slice at a time, so a large cache never queues all its keys at once.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { KubeConfig } from "@kubernetes/client-node";
import { Informer, RESYNC_SLICES, type InformerEvent, type Watcher } from "../../src/runtime/informer";
import { FakeClock } from "../../src/runtime/clock";

interface Item { metadata: { name: string; namespace: string; resourceVersion: string } }

const item = (name: string): Item => ({ metadata: { name, namespace: "ns", resourceVersion: "1" } });

test("a resync round re-emits each object once per period, a slice at a time", async () => {
  const n = 3 * RESYNC_SLICES;
  const period = 60_000;
  const clock = new FakeClock();
  let send: ((phase: string, obj: unknown) => void) | undefined;
  const watcher: Watcher = { watch: (_path, _params, cb) => ((send = cb), Promise.resolve(new AbortController())) };
  const informer = new Informer<Item>({
    kc: new KubeConfig(), path: "/x", watcher, clock, resyncMs: period,
    list: async () => ({ items: Array.from({ length: n }, (_, i) => item(`o${i}`)), metadata: { resourceVersion: "1" } }),
  });
  const resynced: string[] = [];
  informer.on((e: InformerEvent<Item>) => {
    if (e.type === "update" && e.old === e.obj) resynced.push(e.obj.metadata.name);
  });
  informer.start();
  try {
    await informer.waitForSync();
    clock.advance(period / RESYNC_SLICES);
    assert.equal(resynced.length, 3, "one slice: n / RESYNC_SLICES objects, not all of them");

    // Deleted during the round: not re-emitted.
    send?.("DELETED", { metadata: { ...item("o100").metadata, resourceVersion: "2" } });
    clock.advance(period - period / RESYNC_SLICES);
    assert.equal(resynced.length, n - 1, "every other object once within one period");
    assert.equal(new Set(resynced).size, n - 1, "none twice");
    assert.ok(!resynced.includes("o100"), "a deleted object is not resynced");

    clock.advance(period / RESYNC_SLICES);
    assert.equal(resynced.length, n - 1 + 3, "the next round starts with the objects cached now");
  } finally {
    informer.stop();
  }
});
