/** etcd: our backend, raw etcd3 RPCs (lease grant + txn create-if-absent + delete) and etcd3's own Lock. */
import { Etcd3, EtcdLockFailedError } from "etcd3";
import type { KubeConfig } from "@kubernetes/client-node";
import { createBackend } from "../../src/backends/registry";
import { oursSubjects, type Subject } from "./harness";

const TTL_SECONDS = 30;

export async function etcdSubjects(endpoint: string, kubeConfig: KubeConfig): Promise<Subject[]> {
  const ours = oursSubjects(await createBackend({ name: "etcd", type: "etcd", kubeConfig, settings: { endpoints: [endpoint], prefix: "/bench-ours" } }));

  const rawClient = new Etcd3({ hosts: endpoint });
  const raw: Subject = {
    role: "raw",
    label: "etcd3 RPCs: LeaseGrant + Txn(create==0 → put) + DeleteRange",
    async tryAcquire(lockKey) {
      const key = Buffer.from(`/bench-raw/${lockKey}`);
      const { ID } = await rawClient.leaseClient.leaseGrant({ TTL: TTL_SECONDS });
      const txn = await rawClient.kv.txn({
        compare: [{ key, target: "Create", result: "Equal", create_revision: 0 }],
        success: [{ request_put: { key, value: Buffer.from(ID), lease: ID } }],
      });
      return txn.succeeded ? async () => void (await rawClient.kv.deleteRange({ key })) : undefined;
    },
    close: async () => rawClient.close(),
  };

  const peerClient = new Etcd3({ hosts: endpoint });
  const peer: Subject = {
    role: "peer",
    label: "etcd3 1.1.2 client.lock(key).acquire()/release()",
    async tryAcquire(key) {
      const lock = peerClient.lock(`/bench-peer/${key}`).ttl(TTL_SECONDS);
      try {
        await lock.acquire();
      } catch (err) {
        if (err instanceof EtcdLockFailedError) return undefined;
        throw err;
      }
      return async () => void (await lock.release());
    },
    close: async () => peerClient.close(),
  };
  return [...ours, raw, peer];
}
