/**
 * The package as an application imports it: `import { acquireLock } from "kubelock"` resolved by plain Node
 * through package.json's `exports` (the compiled dist/, which `make test` builds first), not through this
 * repository's TypeScript path mapping. A child process without tsx does the import, so nothing here can
 * resolve "kubelock" to the sources instead.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";

const root = join(__dirname, "..", "..");

test('plain Node resolves "kubelock" through package.json exports to the client library', () => {
  const script = `import("kubelock").then((m) => console.log(JSON.stringify(Object.fromEntries(
    ["acquireLock", "usingLock", "LockError", "GROUP"].map((k) => [k, typeof m[k]])))), (e) => { console.error(e.message); process.exit(1); })`;
  const out = execFileSync(process.execPath, ["-e", script], { cwd: root, env: { ...process.env, NODE_OPTIONS: "" }, encoding: "utf8" });
  assert.deepEqual(JSON.parse(out), { acquireLock: "function", usingLock: "function", LockError: "function", GROUP: "string" });
});

test("the types the package names exist", () => {
  const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as { types: string; exports: { ".": { types: string } } };
  for (const file of [pkg.types, pkg.exports["."].types]) assert.ok(existsSync(join(root, file)), `${file} is built`);
  assert.match(readFileSync(join(root, pkg.types), "utf8"), /export \* from "\.\/client"/, "the index re-exports the client library's declarations");
});
