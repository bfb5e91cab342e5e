/**
 * `kubelock operator --watch-namespace`: comma-separated names, the flag repeated, and every mistake refused
 * up front (exit 2, one line each) before anything connects.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { join, resolve } from "node:path";
import { describe, test } from "node:test";
import { namespaceList } from "../../src/cli/namespaces";
import { cliCommand } from "../support/cli-entry";

const repoRoot = resolve(__dirname, "..", "..");

describe("namespaceList", () => {
  const accepted: [string[] | undefined, string[]][] = [
    [undefined, []],
    [[], []],
    [["shop"], ["shop"]],
    [["shop,billing"], ["shop", "billing"]],
    [["shop", "billing"], ["shop", "billing"]],
    [["shop, billing", "team-a"], ["shop", "billing", "team-a"]],
    [["a".repeat(63)], ["a".repeat(63)]],
  ];
  for (const [values, namespaces] of accepted) {
    test(`${JSON.stringify(values)} watches ${JSON.stringify(namespaces)}`, () =>
      assert.deepEqual(namespaceList("watch-namespace", values), { namespaces, problems: [] }));
  }

  const refused: [string[], RegExp[]][] = [
    [[""], [/^--watch-namespace: an empty namespace name/]],
    [["shop,"], [/^--watch-namespace: an empty namespace name/]],
    [["shop,,billing"], [/^--watch-namespace: an empty namespace name/]],
    [["Shop"], [/^--watch-namespace: "Shop" is not a namespace name/]],
    [["shop_1"], [/^--watch-namespace: "shop_1" is not a namespace name/]],
    [["-shop"], [/is not a namespace name/]],
    [["a".repeat(64)], [/is not a namespace name \(lower-case letters, digits and '-', at most 63\)$/]],
    [["shop,shop"], [/^--watch-namespace: namespace "shop" is given twice$/]],
    [["shop", "billing,shop"], [/namespace "shop" is given twice/]],
    [["", "Bad", "x,x"], [/an empty namespace name/, /"Bad" is not a namespace name/, /namespace "x" is given twice/]],
  ];
  for (const [values, problems] of refused) {
    test(`${JSON.stringify(values)} is refused`, () => {
      const result = namespaceList("watch-namespace", values);
      assert.equal(result.problems.length, problems.length, result.problems.join("\n"));
      result.problems.forEach((line, i) => {
        assert.match(line, problems[i]);
        assert.ok(!line.includes("\n"), `one line: ${line}`);
      });
    });
  }
});

test("kubelock operator refuses bad --watch-namespace values with exit 2, one line each, before connecting", async () => {
  // No kubeconfig anywhere: the flags must be refused before the operator would need one.
  const env = { ...process.env, KUBECONFIG: join(repoRoot, "no-such-kubeconfig"), HOME: join(repoRoot, "no-such-home") };
  const { code, stderr } = await new Promise<{ code: number | null; stderr: string }>((done) => {
    const child = execFile(process.execPath, [...cliCommand().args, "operator", "--watch-namespace", "shop,,Billing", "--watch-namespace", "shop"],
      { cwd: repoRoot, env, timeout: 60_000 }, (_err, _stdout, err) => done({ code: child.exitCode, stderr: err }));
  });
  assert.equal(code, 2, stderr);
  assert.deepEqual(stderr.trim().split("\n"), [
    "kubelock operator: invalid flags:",
    "  - --watch-namespace: an empty namespace name (write names separated by single commas)",
    "  - --watch-namespace: \"Billing\" is not a namespace name (lower-case letters, digits and '-', at most 63)",
    "  - --watch-namespace: namespace \"shop\" is given twice",
  ]);
});
