/**
 * The ZooKeeper backend's child ledger: a listing proves which change came last only when every child change since
 * the session's previous listing of the lock was the session's own. Stats are written by hand as a server would
 * report them (cversion: one per child create or delete).
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { ChildLedgers, type ListingStat } from "../../src/backends/zookeeper/ledger";

const session = {};
const lock = "/kubelock/ns/lock";
const stat = (cversion: number, numChildren: number, czxid = 100): ListingStat => ({ czxid, cversion, numChildren, pzxid: 0 });

/** A ledger that already saw one listing: 3 children after 5 changes. */
function listed(): ChildLedgers<object> {
  const ledgers = new ChildLedgers<object>(10);
  ledgers.listing(session, lock)(stat(5, 3));
  return ledgers;
}

test("own deletes and creates only: the listing names the last create as the last change", () => {
  const ledgers = listed();
  const release = ledgers.changing(session, lock);
  const create = ledgers.changing(session, lock);
  const answered = ledgers.listing(session, lock);
  release.settle(-1);
  create.settle(+1);
  assert.equal(answered(stat(7, 3)), create.index);
});

test("a change of another session between the listings proves nothing", () => {
  const cases = [
    ["a delete", stat(7, 2)], ["a create", stat(7, 4)], ["a create and a delete", stat(8, 3)],
    // A server whose cversion counted creates only would show another session's delete in the children count alone.
    ["a delete the cversion does not count", stat(6, 3)],
  ] as const;
  for (const [what, after] of cases) {
    const ledgers = listed();
    const create = ledgers.changing(session, lock);
    const answered = ledgers.listing(session, lock);
    create.settle(+1);
    assert.equal(answered(after), undefined, what);
  }
});

test("a change whose outcome is unknown (no reply, a lost connection) proves nothing", () => {
  const ledgers = listed();
  ledgers.changing(session, lock); // never settled: a request refused at once
  const create = ledgers.changing(session, lock);
  const answered = ledgers.listing(session, lock);
  create.settle(+1);
  assert.equal(answered(stat(6, 4)), undefined);
  // The next listing starts afresh from this one.
  const next = ledgers.changing(session, lock);
  const again = ledgers.listing(session, lock);
  next.settle(+1);
  assert.equal(again(stat(7, 5)), next.index);
});

test("a delete that found nothing changes nothing: the create before it stays the last change", () => {
  const ledgers = listed();
  const create = ledgers.changing(session, lock);
  const missed = ledgers.changing(session, lock);
  const answered = ledgers.listing(session, lock);
  create.settle(+1);
  missed.settle(0);
  assert.equal(answered(stat(6, 4)), create.index);
});

test("a lock node made again (another czxid), a first listing, a failed listing, another session: no proof", () => {
  const recreated = listed();
  const create = recreated.changing(session, lock);
  const answered = recreated.listing(session, lock);
  create.settle(+1);
  assert.equal(answered(stat(6, 4, 200)), undefined, "lock node made again");

  const fresh = new ChildLedgers<object>(10);
  const first = fresh.changing(session, lock);
  const firstListing = fresh.listing(session, lock);
  first.settle(+1);
  assert.equal(firstListing(stat(1, 1)), undefined, "no listing before");

  const ledgers = listed();
  const other = {};
  const elsewhere = ledgers.changing(other, lock);
  const onOther = ledgers.listing(other, lock);
  elsewhere.settle(+1);
  assert.equal(onOther(stat(6, 4)), undefined, "the other session listed nothing before");

  const failed = listed();
  const c1 = failed.changing(session, lock);
  failed.listing(session, lock)(undefined); // ZNONODE or an error: not a listing to compare with
  const c2 = failed.changing(session, lock);
  const answeredAfter = failed.listing(session, lock);
  c1.settle(+1);
  c2.settle(+1);
  assert.equal(answeredAfter(stat(7, 5)), c2.index, "compared with the last listing that answered");
});

test("changes of other locks do not count; changes sent after the listing belong to the next one", () => {
  const ledgers = listed();
  const create = ledgers.changing(session, lock);
  const otherLock = ledgers.changing(session, "/kubelock/ns/other");
  const answered = ledgers.listing(session, lock);
  const later = ledgers.changing(session, lock);
  create.settle(+1);
  otherLock.settle(+1);
  later.settle(-1);
  assert.equal(answered(stat(6, 4)), create.index);
});
