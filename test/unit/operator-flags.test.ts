/**
 * `kubelock operator` flag checks that stop start-up (exit 2) before anything connects: run in-process,
 * since a refused flag returns before the operator starts.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { describe, test, type TestContext } from "node:test";
import { operatorCommand } from "../../src/cli/operator";
import { tempDir } from "../support/temp";

/** Runs the command, returning its exit code and what it printed on stderr. */
async function operator(t: TestContext, args: string[]): Promise<{ code: number; stderr: string }> {
  const lines: string[] = [];
  t.mock.method(console, "error", (...parts: unknown[]) => void lines.push(parts.join(" ")));
  const code = await operatorCommand(args);
  t.mock.restoreAll();
  return { code, stderr: lines.join("\n") };
}

/** The mistake lines of a refusal ("  - ..."). */
const mistakes = (stderr: string) => stderr.split("\n").filter((l) => l.startsWith("  - "));

describe("--leader-elect-* without --leader-elect", () => {
  for (const flag of ["--leader-elect-lease-duration=20s", "--leader-elect-renew-deadline=5s", "--leader-elect-retry-period=1s",
    "--leader-elect-namespace=ops", "--leader-elect-id=other"]) {
    test(`${flag.split("=")[0]} alone is refused with exit 2 and one line`, async (t) => {
      const r = await operator(t, [flag, "--metrics-bind-address", "0", "--health-probe-bind-address", "0"]);
      assert.equal(r.code, 2, r.stderr);
      const lines = mistakes(r.stderr);
      assert.equal(lines.length, 1, r.stderr);
      assert.match(lines[0], new RegExp(`^  - ${flag.split("=")[0]} given without --leader-elect: .*add --leader-elect or remove it$`));
    });
  }

  test("a flag given with its default value counts as given", async (t) => {
    const r = await operator(t, ["--leader-elect-id", "kubelock-operator", "--leader-elect-lease-duration", "15s"]);
    assert.equal(r.code, 2, r.stderr);
    assert.deepEqual(mistakes(r.stderr).map((l) => l.split(":")[0]), ["  - --leader-elect-id, --leader-elect-lease-duration given without --leader-elect"]);
  });

  test("with --leader-elect the same flags pass the flag check", async (t) => {
    // A config that cannot be read stops start-up right after the flags: proof they were accepted.
    const missing = join(tempDir("kubelock-operator-flags-"), "missing.yaml");
    const r = await operator(t, ["--leader-elect", "--leader-elect-id", "other", "--leader-elect-lease-duration", "20s", "--config", missing]);
    assert.equal(r.code, 2, r.stderr);
    assert.doesNotMatch(r.stderr, /invalid flags/, r.stderr);
    assert.match(r.stderr, /^invalid config .*missing\.yaml:\n {2}- /, r.stderr);
  });

  test("without any election flag nothing is said about them", async (t) => {
    const r = await operator(t, ["--log-level", "loud"]);
    assert.equal(r.code, 2, r.stderr);
    assert.deepEqual(mistakes(r.stderr), ['  - --log-level must be debug, info or error, not "loud"']);
  });
});
