/**
 * The runtime's Informer against a real kube-apiserver, on ConfigMaps in a fresh namespace: it lists,
 * watches, emits add/update/delete, re-watches when the server ends a watch, and after a forced
 * relist its cache matches the server again (including changes the watch never delivered).
 */
import { test, before } from "node:test";
import assert from "node:assert/strict";
import * as k8s from "@kubernetes/client-node";
import { kubeConfig, createNamespace, eventually } from "../support/env";
import { Informer, type InformerEvent, type Watcher } from "../../src/runtime/informer";

type ConfigMap = k8s.V1ConfigMap;

let kc: k8s.KubeConfig;
let core: k8s.CoreV1Api;

before(() => {
  kc = kubeConfig();
  core = kc.makeApiClient(k8s.CoreV1Api);
});

/** Lists like the watch delivers: plain JSON (the typed client returns class instances with Dates). */
async function listConfigMaps(namespace: string): Promise<{ items: ConfigMap[]; metadata?: { resourceVersion?: string } }> {
  const list = await core.listNamespacedConfigMap({ namespace });
  return JSON.parse(JSON.stringify(list)) as { items: ConfigMap[]; metadata?: { resourceVersion?: string } };
}

/** A watcher that can drop every event (`deaf`) and counts watch requests; everything else is k8s.Watch. */
class TappedWatcher implements Watcher {
  deaf = false;
  requests = 0;
  private readonly inner: k8s.Watch;
  constructor(config: k8s.KubeConfig, private readonly extraParams: Record<string, string | number> = {}) {
    this.inner = new k8s.Watch(config);
  }
  watch(path: string, params: Record<string, string | number | boolean | undefined>, cb: (phase: string, obj: unknown, w?: unknown) => void, done: (err: unknown) => void): Promise<AbortController> {
    this.requests++;
    return this.inner.watch(path, { ...params, ...this.extraParams }, (phase, obj, w) => {
      if (!this.deaf) cb(phase, obj, w);
    }, done);
  }
}

function cm(name: string, data: Record<string, string>, labels?: Record<string, string>): ConfigMap {
  return { metadata: { name, labels }, data };
}

function describeEvent(e: InformerEvent<ConfigMap>): string {
  return `${e.type} ${e.obj.metadata?.name}`;
}

function snapshot(objs: ConfigMap[]): Record<string, string> {
  return Object.fromEntries(objs.map((o) => [o.metadata?.name ?? "", o.metadata?.resourceVersion ?? ""]).sort());
}

test("informer sees ConfigMap add, update and delete in a fresh namespace, with indexes", async (t) => {
  const namespace = await createNamespace("informer");
  await core.createNamespacedConfigMap({ namespace, body: cm("before", { v: "0" }, { team: "a" }) });

  let listCalls = 0;
  const informer = new Informer<ConfigMap>({
    kc,
    path: `/api/v1/namespaces/${namespace}/configmaps`,
    list: () => {
      listCalls++;
      return listConfigMaps(namespace);
    },
  });
  t.after(() => informer.stop());
  informer.addIndex("team", (o) => (o.metadata?.labels?.team ? [o.metadata.labels.team] : []));
  const events: InformerEvent<ConfigMap>[] = [];
  informer.on((e) => events.push(e));
  informer.start();
  await informer.waitForSync();

  assert.equal(informer.hasSynced(), true);
  assert.equal(informer.get(namespace, "before")?.data?.v, "0");
  // The namespace's kube-root-ca.crt ConfigMap may appear too; only ours matter.
  assert.ok(events.some((e) => e.type === "add" && e.obj.metadata?.name === "before"), events.map(describeEvent).join(", "));
  assert.deepEqual(informer.byIndex("team", "a").map((o) => o.metadata?.name), ["before"]);

  const created = await core.createNamespacedConfigMap({ namespace, body: cm("live", { v: "1" }, { team: "b" }) });
  const added = await eventually("add event for live", () => events.find((e) => e.type === "add" && e.obj.metadata?.name === "live"));
  assert.equal(added.obj.data?.v, "1");
  assert.equal(informer.keyOf(added.obj), `${namespace}/live`);
  assert.equal(informer.get(namespace, "live")?.metadata?.resourceVersion, created.metadata?.resourceVersion);
  assert.ok(created.metadata?.managedFields?.length, "the server returns managedFields");
  for (const o of informer.list(namespace)) assert.equal(o.metadata?.managedFields, undefined, `${o.metadata?.name} is cached without managedFields`);
  assert.deepEqual(informer.byIndex("team", "b").map((o) => o.metadata?.name), ["live"]);

  await core.replaceNamespacedConfigMap({ name: "live", namespace, body: { ...cm("live", { v: "2" }, { team: "a" }), metadata: { name: "live", labels: { team: "a" }, resourceVersion: created.metadata?.resourceVersion } } });
  const updated = await eventually("update event for live", () => events.find((e) => e.type === "update" && e.obj.metadata?.name === "live"));
  assert.equal(updated.obj.data?.v, "2");
  assert.equal(updated.old?.data?.v, "1", "update carries the previous object");
  assert.equal(informer.get(namespace, "live")?.data?.v, "2");
  assert.deepEqual(informer.byIndex("team", "b"), [], "the index moved with the label");
  assert.deepEqual(informer.byIndex("team", "a").map((o) => o.metadata?.name).sort(), ["before", "live"]);

  await core.deleteNamespacedConfigMap({ name: "live", namespace });
  const deleted = await eventually("delete event for live", () => events.find((e) => e.type === "delete" && e.obj.metadata?.name === "live"));
  assert.equal(deleted.obj.data?.v, "2");
  assert.equal(informer.get(namespace, "live"), undefined);
  assert.ok(!informer.list(namespace).some((o) => o.metadata?.name === "live"));
  assert.equal(listCalls, 1, "a healthy watch needs no relist");
});

test("after a forced relist the cache matches the server, with events for what the watch missed", async (t) => {
  const namespace = await createNamespace("informer");
  await core.createNamespacedConfigMap({ namespace, body: cm("keep", { v: "0" }) });
  await core.createNamespacedConfigMap({ namespace, body: cm("change", { v: "0" }) });
  await core.createNamespacedConfigMap({ namespace, body: cm("drop", { v: "0" }) });

  const watcher = new TappedWatcher(kc);
  let listCalls = 0;
  const informer = new Informer<ConfigMap>({
    kc,
    path: `/api/v1/namespaces/${namespace}/configmaps`,
    list: () => {
      listCalls++;
      return listConfigMaps(namespace);
    },
    watcher,
  });
  t.after(() => informer.stop());
  const events: InformerEvent<ConfigMap>[] = [];
  informer.on((e) => events.push(e));
  informer.start();
  await informer.waitForSync();
  assert.deepEqual(snapshot(informer.list(namespace)), snapshot((await listConfigMaps(namespace)).items));

  // The watch goes deaf: these changes never reach the cache through it.
  watcher.deaf = true;
  events.length = 0;
  await core.patchNamespacedConfigMap({ name: "change", namespace, body: { data: { v: "1" } } }, k8s.setHeaderOptions("Content-Type", k8s.PatchStrategy.MergePatch));
  await core.deleteNamespacedConfigMap({ name: "drop", namespace });
  await core.createNamespacedConfigMap({ namespace, body: cm("new", { v: "1" }) });
  const server = await listConfigMaps(namespace);
  assert.notDeepEqual(snapshot(informer.list(namespace)), snapshot(server.items), "the cache is stale before the relist");
  assert.equal(events.length, 0);

  watcher.deaf = false;
  informer.relist();
  await eventually("relist", () => (listCalls >= 2 ? true : undefined));
  const fresh = await listConfigMaps(namespace);
  await eventually("cache to match the server", () => {
    const a = snapshot(informer.list(namespace));
    const b = snapshot(fresh.items);
    return JSON.stringify(a) === JSON.stringify(b) ? true : undefined;
  });
  assert.deepEqual(snapshot(informer.list(namespace)), snapshot(fresh.items));
  const ours = events.map(describeEvent).filter((d) => / (keep|change|drop|new)$/.test(d)).sort();
  assert.deepEqual(ours, ["add new", "delete drop", "update change", "update keep"], "the relist emitted the differences, and a resync of the rest");
  const keep = events.find((e) => e.obj.metadata?.name === "keep");
  assert.ok(keep?.type === "update" && keep.old === keep.obj, "an unchanged object is resynced (old === obj)");
  assert.equal(informer.get(namespace, "change")?.data?.v, "1");

  // And the watch that follows the relist delivers again.
  await core.createNamespacedConfigMap({ namespace, body: cm("after", { v: "2" }) });
  await eventually("add event after the relist", () => events.find((e) => e.type === "add" && e.obj.metadata?.name === "after"));
});

test("when the server ends a watch (timeoutSeconds), the informer watches again from its resourceVersion without relisting", async (t) => {
  const namespace = await createNamespace("informer");
  // The API server closes each watch after 1-2 s; the informer must resume without missing events.
  const watcher = new TappedWatcher(kc, { timeoutSeconds: 1 });
  let listCalls = 0;
  const informer = new Informer<ConfigMap>({
    kc,
    path: `/api/v1/namespaces/${namespace}/configmaps`,
    list: () => {
      listCalls++;
      return listConfigMaps(namespace);
    },
    watcher,
  });
  t.after(() => informer.stop());
  const added = new Set<string>();
  informer.on((e) => {
    if (e.type === "add") added.add(e.obj.metadata?.name ?? "");
  });
  informer.start();
  await informer.waitForSync();
  for (let i = 0; i < 3; i++) {
    await core.createNamespacedConfigMap({ namespace, body: cm(`cm-${i}`, { i: String(i) }) });
    const before = watcher.requests;
    await eventually(`cm-${i} seen`, () => (added.has(`cm-${i}`) ? true : undefined));
    // Let at least one server-side close and re-watch happen between creations.
    await eventually("a re-watch", () => (watcher.requests > before ? true : undefined), 15_000);
  }
  assert.equal(listCalls, 1, "clean watch ends never relist");
  assert.ok(watcher.requests >= 4, `watched ${watcher.requests} times`);
  assert.deepEqual([...added].filter((n) => n.startsWith("cm-")).sort(), ["cm-0", "cm-1", "cm-2"]);
});
