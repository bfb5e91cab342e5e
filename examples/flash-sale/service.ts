/**
 * The flash-sale service: sells limited stock per item. Each purchase takes the item's own lock
 * (DistributedLock `item-ID`) through the kubelock client library, reads the stock, and writes the new
 * stock and the order with the grant's fencing token; the store refuses a stale token. Buyers of one item
 * queue for it, buyers of different items never wait for each other.
 *
 * A plain-function service: `buy` is what an HTTP handler (POST /items/:id/buy) would call.
 */
import * as k8s from "@kubernetes/client-node";
import { API_VERSION, GROUP, LOCK_PLURAL, VERSION, usingLock, type DistributedLock } from "kubelock";
import type { InventoryStore } from "./store";

export type Purchase =
  | { outcome: "sold"; order: string; fencingToken: string }
  | { outcome: "sold-out" };

export interface FlashSaleOptions {
  /** The namespace of the sale's locks and claims. */
  namespace: string;
  store: InventoryStore;
  /** How long a buyer waits for an item's lock before giving up (default 30 s). */
  waitMs?: number;
  /** The heartbeat lease of each purchase's claim, in seconds (default: the library's, 15). */
  leaseDurationSeconds?: number;
}

/** Item ids become lock names: lowercase letters, digits and dashes. */
const ITEM_ID = /^[a-z0-9]([a-z0-9-]{0,56}[a-z0-9])?$/;

export class FlashSale {
  constructor(private readonly kubeConfig: k8s.KubeConfig, private readonly options: FlashSaleOptions) {}

  /** The DistributedLock that guards `item`. */
  static lockName(item: string): string {
    if (!ITEM_ID.test(item)) throw new Error(`item id "${item}" is not a lowercase name of letters, digits and dashes`);
    return `item-${item}`;
  }

  /**
   * Opens the sale: creates one mutex per item (as the sale's operator, who may create locks; buyers only need
   * the `kubelock-claimer` role). An existing lock is kept.
   */
  async open(items: string[]): Promise<void> {
    const custom = this.kubeConfig.makeApiClient(k8s.CustomObjectsApi);
    const { namespace } = this.options;
    await Promise.all(items.map(async (item) => {
      const body: DistributedLock = { apiVersion: API_VERSION, kind: "DistributedLock", metadata: { name: FlashSale.lockName(item), namespace }, spec: { maxHolders: 1 } };
      try {
        await custom.createNamespacedCustomObject({ group: GROUP, version: VERSION, namespace, plural: LOCK_PLURAL, body });
      } catch (err) {
        if (!(err instanceof k8s.ApiException && err.code === 409)) throw err;
      }
    }));
  }

  /** Closes the sale: deletes the items' locks (each releases its holds first). */
  async close(items: string[]): Promise<void> {
    const custom = this.kubeConfig.makeApiClient(k8s.CustomObjectsApi);
    const { namespace } = this.options;
    await Promise.all(items.map(async (item) => {
      try {
        await custom.deleteNamespacedCustomObject({ group: GROUP, version: VERSION, namespace, plural: LOCK_PLURAL, name: FlashSale.lockName(item) });
      } catch (err) {
        if (!(err instanceof k8s.ApiException && err.code === 404)) throw err;
      }
    }));
  }

  /**
   * One purchase of `item` for `buyer`: under the item's lock, sells one if any is left. Rejects with a
   * LockError when the lock cannot be had within `waitMs`, and with the store's StaleTokenError or the
   * signal's LockError when the grant was lost before the sale was written (nothing was sold then).
   */
  async buy(item: string, buyer: string): Promise<Purchase> {
    const { namespace, store, waitMs = 30_000, leaseDurationSeconds } = this.options;
    return usingLock(this.kubeConfig, {
      namespace, lockName: FlashSale.lockName(item), timeoutMs: waitMs, leaseDurationSeconds, labels: { "flash-sale/item": item },
    }, async (signal, fencingToken): Promise<Purchase> => {
      const { stock } = await store.read(item);
      if (stock <= 0) return { outcome: "sold-out" };
      signal.throwIfAborted(); // lost meanwhile: write nothing (the store would refuse it if a newer holder wrote)
      const order = `${item}/${buyer}`;
      await store.write(item, { stock: stock - 1, order }, fencingToken);
      return { outcome: "sold", order, fencingToken };
    });
  }
}
