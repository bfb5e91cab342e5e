/**
 * The kubernetes backend's LeaseCache over a stub source (a list, then a watch the test drives): reads only once
 * synced, every change ordered by resourceVersion (a late event never undoes a newer write, nor brings back a
 * Lease this process deleted), a key's fresh list replaces what the cache held of it, a relist keeps what this
 * process wrote after the list's snapshot, and a watch that ends makes reads list again until the cache has listed
 * and watched anew.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import type * as k8s from "@kubernetes/client-node";
import { LeaseCache, type CacheEvent, type LeaseSource } from "../../src/backends/kubernetes/cache";
import { KEY_LABEL } from "../../src/backends/kubernetes/labels";

const lease = (name: string, resourceVersion: string, holder = "h", label = "k"): k8s.V1Lease => ({
  metadata: { name, namespace: "ns", resourceVersion, labels: { [KEY_LABEL]: label } },
  spec: { holderIdentity: holder },
});

/**
 * A source whose list answers `items` at `version` (or what `relist` returns, from the second list on) and whose
 * watches the test feeds through `send` and ends with `end`.
 */
function stubSource(items: k8s.V1Lease[], version: string, relist?: () => { items: k8s.V1Lease[]; version: string }) {
  let watches = 0;
  let lists = 0;
  let current: { onEvent: (type: string, l: k8s.V1Lease) => void; done: () => void } | undefined;
  const source: LeaseSource = {
    list: async () => {
      const answer = lists++ > 0 && relist ? relist() : { items, version };
      return { items: answer.items, metadata: { resourceVersion: answer.version } };
    },
    watch: async (_rv, onEvent, done) => {
      watches++;
      current = { onEvent, done };
      return new AbortController();
    },
  };
  return {
    source,
    watches: () => watches,
    send: (type: string, l: k8s.V1Lease) => current!.onEvent(type, l),
    end: () => current!.done(),
  };
}

async function synced(cache: LeaseCache, label = "k"): Promise<void> {
  const started = Date.now();
  while (!cache.leases(label)) {
    if (Date.now() - started > 5_000) throw new Error("the cache did not sync");
    await new Promise((resolve) => setImmediate(resolve));
  }
}

const holders = (cache: LeaseCache, label = "k") => cache.leases(label)?.map((l) => `${l.metadata!.name}@${l.metadata!.resourceVersion}`).sort();

test("reads wait for the sync; events newer than what is held apply, older ones do not", async () => {
  const stub = stubSource([lease("kubelock-k-0", "5")], "10");
  const cache = new LeaseCache(stub.source);
  const events: CacheEvent["type"][] = [];
  cache.subscribe((e) => events.push(e.type));
  assert.equal(cache.leases("k"), undefined, "read before the sync");
  cache.start();
  try {
    await synced(cache);
    assert.deepEqual(holders(cache), ["kubelock-k-0@5"]);
    // This process renewed it (its write's response), then a late event of the version before arrives.
    cache.put(lease("kubelock-k-0", "12"));
    stub.send("MODIFIED", lease("kubelock-k-0", "11"));
    assert.deepEqual(holders(cache), ["kubelock-k-0@12"]);
    stub.send("MODIFIED", lease("kubelock-k-0", "12")); // its own write's event: nothing new
    stub.send("MODIFIED", lease("kubelock-k-0", "13"));
    assert.deepEqual(holders(cache), ["kubelock-k-0@13"]);
    assert.deepEqual(events, ["resync", "changed", "changed"]);
  } finally {
    cache.stop();
  }
});

test("a Lease this process deleted stays gone until the watch reports a newer one", async () => {
  const stub = stubSource([lease("kubelock-k-0", "5")], "10");
  const cache = new LeaseCache(stub.source);
  cache.start();
  try {
    await synced(cache);
    cache.deleted(lease("kubelock-k-0", "5"));
    assert.deepEqual(holders(cache), []);
    stub.send("MODIFIED", lease("kubelock-k-0", "5")); // an event from before the delete, late
    assert.deepEqual(holders(cache), [], "a late event brought back a deleted Lease");
    stub.send("DELETED", lease("kubelock-k-0", "14"));
    stub.send("ADDED", lease("kubelock-k-0", "15", "other"));
    assert.deepEqual(holders(cache), ["kubelock-k-0@15"], "the Lease made again was not taken in");
  } finally {
    cache.stop();
  }
});

test("a key's fresh list replaces what the cache held of it: newer items in, missing ones out", async () => {
  const stub = stubSource([lease("kubelock-k-0", "5"), lease("kubelock-k-1", "6"), lease("kubelock-j-0", "7", "h", "j")], "10");
  const cache = new LeaseCache(stub.source);
  cache.start();
  try {
    await synced(cache);
    cache.merge("k", [lease("kubelock-k-1", "20"), lease("kubelock-k-q-1", "21")], "22");
    assert.deepEqual(holders(cache), ["kubelock-k-1@20", "kubelock-k-q-1@21"]);
    assert.deepEqual(holders(cache, "j"), ["kubelock-j-0@7"], "another key's Leases changed");
    stub.send("MODIFIED", lease("kubelock-k-0", "9")); // older than the list that found it gone
    assert.deepEqual(holders(cache), ["kubelock-k-1@20", "kubelock-k-q-1@21"]);
  } finally {
    cache.stop();
  }
});

test("a watch that ends makes reads list until the cache has listed and watched again", async () => {
  const stub = stubSource([lease("kubelock-k-0", "5")], "10");
  const cache = new LeaseCache(stub.source);
  cache.start();
  try {
    await synced(cache);
    stub.end();
    assert.equal(cache.leases("k"), undefined, "read from a cache whose watch ended");
    await synced(cache);
    assert.equal(stub.watches(), 2);
    cache.invalidate(); // a request found the server unreachable
    assert.equal(cache.leases("k"), undefined, "read from a cache a failed request invalidated");
    await synced(cache);
    assert.equal(stub.watches(), 3);
  } finally {
    cache.stop();
  }
});

test("a relist whose snapshot is older than this process's writes keeps them until the watch brings their events", async () => {
  // The list was made at 11; meanwhile this process created kubelock-k-1 (12) and deleted kubelock-k-0 (read at 5).
  const stub = stubSource([lease("kubelock-k-0", "5")], "10", () => ({ items: [lease("kubelock-k-0", "5")], version: "11" }));
  const cache = new LeaseCache(stub.source);
  cache.start();
  try {
    await synced(cache);
    cache.put(lease("kubelock-k-1", "12"));
    cache.deleted(lease("kubelock-k-0", "5"));
    stub.end();
    await synced(cache);
    assert.deepEqual(holders(cache), ["kubelock-k-1@12"], "the relist dropped a Lease this process created after its snapshot, or brought back one it deleted");
    stub.send("ADDED", lease("kubelock-k-1", "12"));
    stub.send("DELETED", lease("kubelock-k-0", "13"));
    assert.deepEqual(holders(cache), ["kubelock-k-1@12"]);
  } finally {
    cache.stop();
  }
});
