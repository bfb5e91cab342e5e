/** ObservedVersions: expiry counts from when this process first saw a version, never from a written timestamp. */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { ObservedVersions } from "../../src/runtime/observed";

describe("ObservedVersions", () => {
  test("a version keeps the time it was first seen; a new version starts afresh", () => {
    const seen = new ObservedVersions();
    assert.deepEqual([...seen.sync("k", [["a", "1"], ["b", "7"]], 100)], [["a", 100], ["b", 100]]);
    assert.deepEqual([...seen.sync("k", [["a", "1"], ["b", "8"]], 250)], [["a", 100], ["b", 250]]);
    assert.equal(seen.note("k", "a", "1", 900), 100);
    assert.equal(seen.note("k", "a", "2", 900), 900);
    assert.equal(seen.seenAt("k", "a", "1"), undefined, "an older version is not the one last seen");
    assert.equal(seen.seenAt("k", "a", "2"), 900);
  });

  test("sync forgets members a full read no longer finds, and empty groups", () => {
    const seen = new ObservedVersions();
    seen.sync("k", [["a", "1"], ["b", "1"]], 100);
    seen.sync("k", [["b", "1"]], 200);
    assert.equal(seen.seenAt("k", "a", "1"), undefined);
    assert.equal(seen.seenAt("k", "b", "1"), 100);
    seen.sync("k", [], 300);
    assert.equal(seen.seenAt("k", "b", "1"), undefined);
    seen.note("k", "a", "3", 400);
    assert.equal(seen.note("k", "a", "3", 500), 400, "a member noted again after its group emptied starts from its new note");
  });

  test("a write counts from when it was sent, even when a read saw it first", () => {
    const seen = new ObservedVersions();
    seen.note("k", "a", "5", 120); // a watch event for our own write arrived before the write's reply
    seen.wrote("k", "a", "5", 100);
    assert.equal(seen.seenAt("k", "a", "5"), 100);
    seen.drop("k", "a");
    assert.equal(seen.seenAt("k", "a", "5"), undefined);
    seen.wrote("k", "b", "1", 10);
    seen.forget("k");
    assert.equal(seen.seenAt("k", "b", "1"), undefined);
  });

  test("an interruption restarts every observation at its next sighting", () => {
    const seen = new ObservedVersions();
    seen.sync("k", [["a", "1"]], 100);
    seen.wrote("j", "b", "4", 150);
    seen.interrupted(); // the server could not be reached at, say, 200..5000
    assert.equal(seen.seenAt("k", "a", "1"), undefined);
    assert.equal(seen.seenAt("j", "b", "4"), undefined);
    assert.deepEqual([...seen.sync("k", [["a", "1"]], 5000)], [["a", 5000]], "the same version counts from when it was seen again");
    assert.equal(seen.note("j", "b", "4", 5100), 5100);
  });
});
