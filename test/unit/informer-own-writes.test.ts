/**
 * The informer and this process's own writes (`observe`, stub list and watch): a watch event older than a write it
 * observed does not undo it; a reply showing the object deleted (a deletionTimestamp and no finalizers left) removes
 * it at once with one delete event, older events do not bring it back, its DELETED event tells nothing new, and an
 * object created again under the same name is seen.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { KubeConfig } from "@kubernetes/client-node";
import { Informer, type InformerEvent, type Watcher } from "../../src/runtime/informer";

interface Item {
  metadata: { name: string; namespace: string; uid: string; resourceVersion: string; deletionTimestamp?: string; finalizers?: string[] };
}

const item = (resourceVersion: string, extra: Partial<Item["metadata"]> = {}): Item =>
  ({ metadata: { name: "c", namespace: "ns", uid: "u1", resourceVersion, finalizers: ["kubelock.io/release"], ...extra } });

async function started(items: Item[]) {
  let callback: ((phase: string, obj: unknown) => void) | undefined;
  const watcher: Watcher = { watch: (_path, _params, cb) => ((callback = cb), Promise.resolve(new AbortController())) };
  const informer = new Informer<Item>({ kc: new KubeConfig(), path: "/x", watcher, list: async () => ({ items, metadata: { resourceVersion: "1" } }) });
  const events: string[] = [];
  informer.on((e: InformerEvent<Item>) => events.push(`${e.type}@${e.obj.metadata.resourceVersion}`));
  informer.start();
  await informer.waitForSync();
  await new Promise((resolve) => setImmediate(resolve)); // the watch is open
  events.length = 0;
  return { informer, events, send: (phase: string, obj: Item) => callback?.(phase, obj) };
}

test("a watch event older than an observed write does not undo it; the write's own event is an ordinary update", async () => {
  const { informer, events, send } = await started([item("5")]);
  try {
    informer.observe(item("7", { finalizers: [] }));
    send("MODIFIED", item("6"));
    assert.equal(informer.get("ns", "c")?.metadata.resourceVersion, "7");
    assert.deepEqual(informer.get("ns", "c")?.metadata.finalizers, []);
    send("MODIFIED", item("7", { finalizers: [] }));
    send("MODIFIED", item("8", { finalizers: [] }));
    assert.equal(informer.get("ns", "c")?.metadata.resourceVersion, "8");
    assert.deepEqual(events, ["update@7", "update@8"]);
  } finally {
    informer.stop();
  }
});

test("a reply showing the object deleted removes it at once; late events neither bring it back nor tell twice", async () => {
  const deleting = item("9", { deletionTimestamp: "2026-01-01T00:00:00Z" });
  const { informer, events, send } = await started([deleting]);
  try {
    informer.observe(item("9", { deletionTimestamp: "2026-01-01T00:00:00Z", finalizers: [] }));
    assert.equal(informer.get("ns", "c"), undefined);
    assert.deepEqual(events, ["delete@9"]);
    send("MODIFIED", deleting); // delivered late
    assert.equal(informer.get("ns", "c"), undefined, "an event up to the deleted version does not bring it back");
    send("DELETED", item("10", { deletionTimestamp: "2026-01-01T00:00:00Z", finalizers: [] }));
    assert.deepEqual(events, ["delete@9"], "the DELETED event tells nothing new");
    send("ADDED", item("11", { uid: "u2" }));
    assert.equal(informer.get("ns", "c")?.metadata.uid, "u2", "created again under the same name");
    assert.deepEqual(events, ["delete@9", "add@11"]);
  } finally {
    informer.stop();
  }
});

test("a reply with finalizers left, or of another object of the same name, is no deletion", async () => {
  const { informer, events } = await started([item("3", { deletionTimestamp: "2026-01-01T00:00:00Z", finalizers: ["a", "b"] })]);
  try {
    informer.observe(item("4", { deletionTimestamp: "2026-01-01T00:00:00Z", finalizers: ["b"] }));
    assert.deepEqual(informer.get("ns", "c")?.metadata.finalizers, ["b"]);
    informer.observe(item("5", { uid: "other", deletionTimestamp: "2026-01-01T00:00:00Z", finalizers: [] }));
    assert.ok(informer.get("ns", "c"), "another object's reply removes nothing");
    assert.deepEqual(events, []);
  } finally {
    informer.stop();
  }
});
