/**
 * MultiNamespaceCache over two informers, each listing one namespace (a stub list; the watch stays open and
 * silent): reads, indexes and handlers see both namespaces as one cache, and nothing of any other.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { KubeConfig } from "@kubernetes/client-node";
import { MultiNamespaceCache } from "../../src/runtime/cache";
import { Informer, type InformerEvent, type ListResult, type Watcher } from "../../src/runtime/informer";

interface Item { metadata: { name: string; namespace: string; resourceVersion: string; uid: string } }

const item = (namespace: string, name: string, resourceVersion = "1"): Item => ({ metadata: { name, namespace, resourceVersion, uid: `${namespace}-${name}` } });

/** A watch that opens and never delivers (until aborted). */
const silentWatcher: Watcher = { watch: () => Promise.resolve(new AbortController()) };

/** An informer of `namespace` whose list resolves when `release` is called. */
function informerOf(namespace: string, items: Item[]): { informer: Informer<Item>; release: () => void } {
  let release = () => {};
  const listed = new Promise<void>((resolve) => (release = resolve));
  const list = async (): Promise<ListResult<Item>> => {
    await listed;
    return { items, metadata: { resourceVersion: "10" } };
  };
  const informer = new Informer<Item>({ kc: new KubeConfig(), path: `/api/v1/namespaces/${namespace}/items`, list, watcher: silentWatcher, name: namespace });
  return { informer, release };
}

test("two namespaces read as one cache; another namespace is not in it", async () => {
  const shop = informerOf("shop", [item("shop", "a"), item("shop", "b")]);
  const billing = informerOf("billing", [item("billing", "a")]);
  const cache = new MultiNamespaceCache(new Map([["shop", shop.informer], ["billing", billing.informer]]));
  const events: string[] = [];
  cache.on((e: InformerEvent<Item>) => events.push(`${e.type} ${e.obj.metadata.namespace}/${e.obj.metadata.name}`));
  cache.addIndex("uid", (o) => [o.metadata.uid]);
  cache.addIndex("name", (o) => [o.metadata.name]);
  cache.start();
  try {
    shop.release();
    await shop.informer.waitForSync();
    assert.equal(cache.hasSynced(), false, "synced while one namespace has not listed");
    billing.release();
    await cache.waitForSync();
    assert.equal(cache.hasSynced(), true);

    assert.deepEqual(events.sort(), ["add billing/a", "add shop/a", "add shop/b"]);
    assert.equal(cache.get("shop", "b")?.metadata.uid, "shop-b");
    assert.equal(cache.get("billing", "a")?.metadata.uid, "billing-a");
    assert.equal(cache.get("billing", "b"), undefined);
    assert.equal(cache.get("other", "a"), undefined);
    assert.equal(cache.get(undefined, "a"), undefined);
    assert.deepEqual(cache.list().map((o) => o.metadata.uid).sort(), ["billing-a", "shop-a", "shop-b"]);
    assert.deepEqual(cache.list("shop").map((o) => o.metadata.uid).sort(), ["shop-a", "shop-b"]);
    assert.deepEqual(cache.list("other"), []);
    assert.deepEqual(cache.byIndex("name", "a").map((o) => o.metadata.uid).sort(), ["billing-a", "shop-a"]);
    assert.deepEqual(cache.byIndex("uid", "billing-a").map((o) => o.metadata.namespace), ["billing"]);
    assert.throws(() => cache.byIndex("nope", "a"), /no index nope/);

    // Read-your-writes reaches the namespace's own informer; an object of another namespace is ignored.
    cache.observe(item("billing", "a", "11"));
    assert.equal(cache.get("billing", "a")?.metadata.resourceVersion, "11");
    assert.equal(shop.informer.get("billing", "a"), undefined);
    cache.observe(item("other", "a", "12"));
    assert.equal(cache.list().length, 3);
  } finally {
    cache.stop();
  }
});

test("waitForSync rejects once a member is stopped before it synced", async () => {
  const shop = informerOf("shop", []);
  const billing = informerOf("billing", []);
  const cache = new MultiNamespaceCache(new Map([["shop", shop.informer], ["billing", billing.informer]]));
  cache.start();
  shop.release();
  await shop.informer.waitForSync();
  const synced = cache.waitForSync();
  cache.stop();
  await assert.rejects(synced, /informer billing stopped before it synced/);
});
