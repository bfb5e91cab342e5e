/**
 * The flash sale's inventory database, kept in memory for the example: stock and orders per item, and per
 * item the newest fencing token it has accepted. A write must carry a token at least that new, or it is
 * refused (StaleTokenError): a buyer whose lock was lost, and handed to another buyer meanwhile, cannot
 * overwrite what the newer holder wrote, however late its write arrives. A SQL database does the same
 * with one conditional statement:
 *
 *   UPDATE items SET stock = $stock, fencing_token = $token WHERE id = $item AND fencing_token <= $token
 *
 * and refuses when no row was updated. Reads and writes yield to the event loop as real I/O does, so
 * buyers that do not hold the item's lock interleave between reading the stock and writing it.
 */

/** A write carried an older fencing token than one the store already accepted for the item. */
export class StaleTokenError extends Error {
  override readonly name = "StaleTokenError";

  constructor(readonly item: string, readonly token: string, readonly newest: string) {
    super(`item ${item}: fencing token ${token} is older than ${newest}, already accepted; the writer's lock was lost`);
  }
}

export interface ItemRecord {
  stock: number;
  /** Order ids, in the order their writes were accepted. */
  orders: string[];
  /** The token of each accepted write, in order. */
  tokens: string[];
}

const io = () => new Promise<void>((resolve) => setImmediate(resolve));

export class InventoryStore {
  private readonly items = new Map<string, ItemRecord & { newest: bigint }>();
  /** How many writes were refused for a stale token. */
  rejected = 0;

  constructor(stock: Record<string, number>) {
    for (const [item, count] of Object.entries(stock)) this.items.set(item, { stock: count, orders: [], tokens: [], newest: -1n });
  }

  private record(item: string) {
    const record = this.items.get(item);
    if (!record) throw new Error(`no item ${item} in this sale`);
    return record;
  }

  /** The item's stock now. */
  async read(item: string): Promise<{ stock: number }> {
    await io();
    return { stock: this.record(item).stock };
  }

  /** Sets the item's stock and records an order, if `fencingToken` is not older than any accepted before. */
  async write(item: string, change: { stock: number; order: string }, fencingToken: string): Promise<void> {
    await io();
    const record = this.record(item);
    const token = BigInt(fencingToken);
    if (token < record.newest) {
      this.rejected++;
      throw new StaleTokenError(item, fencingToken, record.newest.toString());
    }
    record.newest = token;
    record.stock = change.stock;
    record.orders.push(change.order);
    record.tokens.push(fencingToken);
  }

  /** A copy of what the store holds for the item. */
  snapshot(item: string): ItemRecord {
    const { stock, orders, tokens } = this.record(item);
    return { stock, orders: [...orders], tokens: [...tokens] };
  }
}
