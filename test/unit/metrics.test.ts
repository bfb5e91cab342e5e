/**
 * kubelock_claims_lost_total: shown at 0 from the start (so `increase()` sees the first Lost), and one more
 * per claim shown Lost.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { OperatorMetrics } from "../../src/metrics";

/** The value of the unlabelled series `name`, as exposed. */
const sample = (text: string, name: string) => text.split("\n").find((l) => l.startsWith(`${name} `))?.split(" ")[1];

test("claims_lost_total starts at 0 and counts each claim shown Lost", async () => {
  const metrics = new OperatorMetrics();
  assert.equal(sample((await metrics.scrape()).body, "kubelock_claims_lost_total"), "0");
  metrics.claimLost();
  metrics.claimLost();
  const { body } = await metrics.scrape();
  assert.equal(sample(body, "kubelock_claims_lost_total"), "2");
  assert.match(body, /^# TYPE kubelock_claims_lost_total counter$/m);
  assert.equal(sample(body, "kubelock_releases_total"), undefined, "a Lost claim is no release by itself");
});
