/** Config-layer helpers for the config tests. */
import assert from "node:assert/strict";
import { ConfigError, parseConfig } from "../../src/config";

/** The config layer's lines for `text`; fails the test if the config is accepted. */
export function configProblems(text: string): string[] {
  try {
    parseConfig(text, "test.yaml");
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected ConfigError, got ${err}`);
    return err.problems;
  }
  assert.fail("config was accepted");
}
