/**
 * What the informer keeps and how it lists (stub list and watch): lists come in pages that it follows to the
 * end; every object, from a list page, a watch event or `observe`, passes its transform before the cache,
 * indexes and handlers see it (by default managedFields and kubectl's last-applied annotation are dropped,
 * without changing the object given); the operator's pod cache keeps only the fields its readers use.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { KubeConfig, type V1Pod } from "@kubernetes/client-node";
import { Informer, LAST_APPLIED_ANNOTATION, withoutBookkeeping, type InformerEvent, type ListPage, type ListResult, type Watcher } from "../../src/runtime/informer";
import { podForCache } from "../../src/runtime/pods";

interface Item {
  metadata: { name: string; namespace: string; resourceVersion: string; managedFields?: unknown; annotations?: Record<string, string> };
  spec?: { size: number };
}

const item = (name: string, resourceVersion = "1", extra: Partial<Item["metadata"]> = {}): Item =>
  ({ metadata: { name, namespace: "ns", resourceVersion, ...extra }, spec: { size: 1 } });

/** A watch that hands its event callback out (`send`) and otherwise stays open until aborted. */
function controlledWatcher(): { watcher: Watcher; send: (phase: string, obj: unknown) => void } {
  let callback: ((phase: string, obj: unknown) => void) | undefined;
  return {
    watcher: { watch: (_path, _params, cb) => ((callback = cb), Promise.resolve(new AbortController())) },
    send: (phase, obj) => callback?.(phase, obj),
  };
}

test("a list is followed page by page to the end, with the page size asked for", async () => {
  const all = Array.from({ length: 7 }, (_, i) => item(`o${i}`));
  const pages: (ListPage | undefined)[] = [];
  const list = async (page?: ListPage): Promise<ListResult<Item>> => {
    pages.push(page);
    const from = page?.continue ? Number(page.continue) : 0;
    const to = Math.min(all.length, from + (page?.limit ?? all.length));
    return { items: all.slice(from, to), metadata: { resourceVersion: "42", continue: to < all.length ? String(to) : undefined } };
  };
  const { watcher } = controlledWatcher();
  const informer = new Informer<Item>({ kc: new KubeConfig(), path: "/x", list, watcher, pageSize: 3 });
  informer.start();
  try {
    await informer.waitForSync();
    assert.deepEqual(pages, [{ limit: 3, continue: undefined }, { limit: 3, continue: "3" }, { limit: 3, continue: "6" }]);
    assert.deepEqual(informer.list().map((o) => o.metadata.name).sort(), all.map((o) => o.metadata.name).sort());
    assert.equal(informer.lastResourceVersion(), "42");
  } finally {
    informer.stop();
  }

  // pageSize 0: one request without paging.
  pages.length = 0;
  const whole = new Informer<Item>({ kc: new KubeConfig(), path: "/x", list, watcher, pageSize: 0 });
  whole.start();
  try {
    await whole.waitForSync();
    assert.deepEqual(pages, [undefined]);
    assert.equal(whole.list().length, 7);
  } finally {
    whole.stop();
  }
});

test("every object passes the transform before the cache, indexes and handlers see it", async () => {
  const seen: string[] = [];
  const transform = (o: Item): Item => {
    seen.push(`${o.metadata.name}@${o.metadata.resourceVersion}`);
    return { metadata: { ...o.metadata, annotations: { kept: "yes" } } }; // drops spec
  };
  const { watcher, send } = controlledWatcher();
  const informer = new Informer<Item>({
    kc: new KubeConfig(), path: "/x", watcher, transform,
    list: async () => ({ items: [item("a")], metadata: { resourceVersion: "1" } }),
  });
  informer.addIndex("kept", (o) => (o.spec ? ["spec"] : [o.metadata.annotations?.kept ?? "none"]));
  const events: InformerEvent<Item>[] = [];
  informer.on((e) => events.push(e));
  informer.start();
  try {
    await informer.waitForSync();
    await new Promise((resolve) => setImmediate(resolve)); // the watch is open
    send("ADDED", item("b", "2"));
    send("MODIFIED", item("a", "3"));
    informer.observe(item("b", "4"));
    send("DELETED", item("a", "5"));
    assert.deepEqual(seen, ["a@1", "b@2", "a@3", "b@4", "a@5"]);
    assert.equal(informer.get("ns", "b")?.spec, undefined);
    assert.equal(informer.get("ns", "b")?.metadata.resourceVersion, "4");
    assert.deepEqual(informer.byIndex("kept", "yes").map((o) => o.metadata.name), ["b"]);
    assert.ok(events.every((e) => e.obj.spec === undefined && e.obj.metadata.annotations?.kept === "yes"), "handlers see transformed objects");
  } finally {
    informer.stop();
  }
});

test("by default managedFields and the last-applied annotation are not cached, and the object given is left as it was", async () => {
  const { watcher, send } = controlledWatcher();
  const listed = item("a", "1", { managedFields: [{ manager: "kubectl" }], annotations: { [LAST_APPLIED_ANNOTATION]: "{...}", "kubelock.io/pod-uid": "u1" } });
  const informer = new Informer<Item>({ kc: new KubeConfig(), path: "/x", watcher, list: async () => ({ items: [listed], metadata: { resourceVersion: "1" } }) });
  informer.start();
  try {
    await informer.waitForSync();
    assert.deepEqual(informer.get("ns", "a")?.metadata, { name: "a", namespace: "ns", resourceVersion: "1", annotations: { "kubelock.io/pod-uid": "u1" } });
    assert.deepEqual(informer.get("ns", "a")?.spec, { size: 1 });
    await new Promise((resolve) => setImmediate(resolve));
    send("ADDED", item("b", "2", { managedFields: [] }));
    assert.equal(informer.get("ns", "b")?.metadata.managedFields, undefined);
    const written = item("a", "3", { managedFields: [{ manager: "kubelock" }] });
    informer.observe(written);
    assert.equal(informer.get("ns", "a")?.metadata.resourceVersion, "3");
    assert.equal(informer.get("ns", "a")?.metadata.managedFields, undefined);
    assert.deepEqual(written.metadata.managedFields, [{ manager: "kubelock" }], "the caller's object is not changed");
  } finally {
    informer.stop();
  }
  const plain = item("c");
  assert.equal(withoutBookkeeping(plain), plain, "nothing to drop: the same object");
});

test("the pod cache keeps only what the operator reads of a pod", () => {
  const pod = {
    apiVersion: "v1",
    kind: "Pod",
    metadata: {
      name: "p", namespace: "ns", uid: "u", resourceVersion: "7", generation: 1, deletionTimestamp: "2026-01-01T00:00:00Z",
      labels: { app: "x" },
      annotations: { "kubelock.io/lock": "db", "kubelock.io/priority": "5", [LAST_APPLIED_ANNOTATION]: "{...}", other: "y" },
      ownerReferences: [{ apiVersion: "apps/v1", kind: "ReplicaSet", name: "rs", uid: "r" }],
      managedFields: [{ manager: "kubelet" }],
    },
    spec: { containers: [{ name: "c", image: "busybox", env: [{ name: "A", value: "B" }] }], schedulingGates: [{ name: "kubelock.io/lock" }, { name: "other" }], nodeName: "n" },
    status: { phase: "Pending", conditions: [{ type: "PodScheduled", status: "False" }], containerStatuses: [] },
  } as unknown as V1Pod;
  const before = JSON.stringify(pod);
  assert.deepEqual(podForCache(pod), {
    metadata: {
      name: "p", namespace: "ns", uid: "u", resourceVersion: "7", deletionTimestamp: "2026-01-01T00:00:00Z",
      annotations: { "kubelock.io/lock": "db", "kubelock.io/priority": "5" },
    },
    spec: { schedulingGates: [{ name: "kubelock.io/lock" }, { name: "other" }] },
    status: { phase: "Pending" },
  });
  assert.equal(JSON.stringify(pod), before, "the pod given is not changed");
  // A pod with none of them: just its identity.
  assert.deepEqual(podForCache({ metadata: { name: "q", namespace: "ns", uid: "v", resourceVersion: "8" }, spec: { containers: [] } }),
    { metadata: { name: "q", namespace: "ns", uid: "v", resourceVersion: "8" } });
});
