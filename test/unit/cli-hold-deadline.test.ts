/**
 * `kubelock run`'s own deadline (pure arithmetic) and the process group it signals (real processes).
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import { driftMarginMs, holdDeadline, killAt, renewIntervalMs, retryIntervalMs } from "../../src/cli/hold-deadline";
import { ProcessGroup } from "../../src/cli/process-group";
import { eventually } from "../support/env";
import { running } from "../support/cli";
import { tempDir } from "../support/temp";

describe("hold deadline", () => {
  test("the margin is 10% of the lease, at least 1s, at most a quarter of the lease", () => {
    assert.equal(driftMarginMs(15_000), 1500);
    assert.equal(driftMarginMs(60_000), 6000);
    assert.equal(driftMarginMs(5000), 1000);
    assert.equal(driftMarginMs(4000), 1000);
    assert.equal(driftMarginMs(2000), 500);
    assert.equal(driftMarginMs(1000), 250);
  });

  test("stop at lease minus the margin, kill by lease minus half the margin, both after the confirmed start", () => {
    assert.deepEqual(holdDeadline(100_000, 15_000), { stopAt: 113_500, killBy: 114_250 });
    assert.deepEqual(holdDeadline(0, 1000), { stopAt: 750, killBy: 875 });
    for (const lease of [1000, 2000, 4000, 15_000, 3_600_000]) {
      const { stopAt, killBy } = holdDeadline(0, lease);
      assert.ok(stopAt > renewIntervalMs(lease) * 2, `lease ${lease}: two renewals may fail before the stop`);
      assert.ok(stopAt < killBy && killBy < lease, `lease ${lease}: SIGTERM, then SIGKILL, both before the lease ends`);
    }
  });

  test("the grace period never pushes the kill past the deadline's kill time", () => {
    assert.equal(killAt(1000, 10_000, 5000), 5000);
    assert.equal(killAt(1000, 2000, 5000), 3000);
  });

  test("renew every third of the lease, retry within a second", () => {
    assert.equal(renewIntervalMs(15_000), 5000);
    assert.equal(retryIntervalMs(15_000), 1000);
    assert.equal(retryIntervalMs(1000), 333);
  });
});

describe("process group", () => {
  test("a signal to the group reaches the background children of a shell", async () => {
    const pidFile = join(tempDir("kubelock-group-"), "pid");
    const group = new ProcessGroup(["sh", "-c", `sleep 1000 & echo $! > ${pidFile}; wait`], process.env);
    const exited = new Promise((resolve) => group.child.once("exit", resolve));
    const child = await eventually("the background sleep started", () => Number(readFileSync(pidFile, "utf8").trim()) || undefined);
    assert.ok(running(child) && group.alive());
    group.signal("SIGTERM");
    await exited;
    await eventually("the background sleep is gone", () => (running(child) ? undefined : true));
    assert.equal(group.alive(), false);
  });
});
