/**
 * ZooKeeper: our backend, the raw client (create + delete of an ephemeral sequential node) and the naive
 * recipe of the reference article (create ephemeral sequential, list children, first holds, else watch
 * the predecessor and look again).
 */
import ZooKeeper from "zookeeper";
import type { KubeConfig } from "@kubernetes/client-node";
import { createBackend } from "../../src/backends/registry";
import { oursSubjects, type Subject } from "./harness";

const Z = ZooKeeper.constants;

/** The result code of a failed promise call ("-101 no node"). */
const rcOf = (err: unknown): number => Number.parseInt(String((err as Error)?.message ?? err), 10);

async function client(connect: string): Promise<ZooKeeper> {
  const zk = new ZooKeeper({ connect, timeout: 30_000, debug_level: 0, host_order_deterministic: false });
  const connected = new Promise((resolve) => zk.once("connect", resolve));
  zk.init({});
  await connected;
  return zk;
}

/** Creates a persistent node; an existing one is fine. */
async function ensure(zk: ZooKeeper, path: string): Promise<void> {
  await zk.create(path, "", Z.ZOO_PERSISTENT).catch((err) => {
    if (rcOf(err) !== Z.ZNODEEXISTS) throw err;
  });
}

/** Lock keys are `ns/key`; one path segment each. */
const segment = (key: string) => encodeURIComponent(key);

export async function zookeeperSubjects(connect: string, kubeConfig: KubeConfig): Promise<Subject[]> {
  const ours = oursSubjects(await createBackend({ name: "zk", type: "zookeeper", kubeConfig, settings: { connect, rootPath: "/bench-ours" } }));

  const rawClient = await client(connect);
  await ensure(rawClient, "/bench-raw");
  // The brief's raw baseline is "create + delete of an ephemeral sequential node"; a sequential create always
  // succeeds, so it excludes nobody under contention. A plain EPHEMERAL node created if absent costs the same one
  // create round trip and is a real try-lock, so it is the raw baseline for both workloads.
  const raw: Subject = {
    role: "raw",
    label: "zookeeper addon: create EPHEMERAL (if absent) + delete",
    async tryAcquire(key) {
      const node = `/bench-raw/${segment(key)}`;
      try {
        await rawClient.create(node, "", Z.ZOO_EPHEMERAL);
      } catch (err) {
        if (rcOf(err) === Z.ZNODEEXISTS) return undefined;
        throw err;
      }
      return async () => void (await rawClient.delete_(node, -1));
    },
    close: async () => void rawClient.close(),
  };

  const rawSequential: Subject = {
    role: "raw",
    label: "zookeeper addon: create EPHEMERAL_SEQUENTIAL + delete (no exclusion: uncontended only)",
    modes: ["uncontended"],
    async tryAcquire(key) {
      const node: string = await rawClient.create(`/bench-raw/${segment(key)}-`, "", Z.ZOO_EPHEMERAL_SEQUENTIAL);
      return async () => void (await rawClient.delete_(node, -1));
    },
    close: async () => undefined,
  };

  const peerClient = await client(connect);
  await ensure(peerClient, "/bench-naive");
  const acquire = async (key: string) => {
    const dir = `/bench-naive/${segment(key)}`;
    await ensure(peerClient, dir); // the article assumes the lock's node exists; a fresh key needs it
    const node: string = await peerClient.create(`${dir}/lock-`, "", Z.ZOO_EPHEMERAL_SEQUENTIAL);
    const mine = node.slice(dir.length + 1);
    for (;;) {
      const kids = (await peerClient.get_children(dir, false)).sort();
      const index = kids.indexOf(mine);
      if (index === 0) return async () => void (await peerClient.delete_(node, -1));
      if (index < 0) throw new Error(`naive recipe: our node ${node} is gone`);
      // Watch the one in front; if it is already gone, look again at once.
      await new Promise<void>((resolve) => {
        peerClient.w_exists(`${dir}/${kids[index - 1]}`, () => resolve()).then((stat) => (stat ? undefined : resolve()), () => resolve());
      });
    }
  };
  const peer: Subject = {
    role: "peer",
    label: "naive recipe of the reference article (same addon)",
    // The recipe has no try: uncontended, an acquire on a fresh key never waits, so it serves as one.
    tryAcquire: acquire,
    acquire,
    close: async () => void peerClient.close(),
  };
  return [...ours, raw, rawSequential, peer];
}
