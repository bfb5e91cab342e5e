/**
 * `kubectl lock`: the CLI as a kubectl plugin. A `kubectl-lock` launcher of the plugin's source goes on PATH
 * and the real kubectl runs it as `kubectl lock status|wait|run|release`, with kubectl's flags
 * (-n/--namespace, --kubeconfig, --context, and KUBECONFIG), against the real operator.
 */
import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { before, describe, test } from "node:test";
import * as k8s from "@kubernetes/client-node";
import { parse } from "yaml";
import { kubeConfig, run, testEnv, type CommandResult } from "../support/env";
import { kubeconfigFile, show } from "../support/cli";
import { useOperatorNamespace } from "../support/operator";
import { tempDir } from "../support/temp";

const repoRoot = resolve(__dirname, "..", "..");
const ctx = useOperatorNamespace("kubectl-plugin");
let pluginDir: string;

before(() => {
  // What `npm install -g` puts on PATH is the build of src/cli/kubectl-lock.ts; this runs its source.
  pluginDir = tempDir("kubectl-lock-");
  const tsx = pathToFileURL(require.resolve("tsx")).href;
  const source = join(repoRoot, "src/cli/kubectl-lock.ts");
  writeFileSync(join(pluginDir, "kubectl-lock"), `#!/bin/sh\nexec '${process.execPath}' --import '${tsx}' '${source}' "$@"\n`, { mode: 0o755 });
});

/** `kubectl ARGS` with the plugin on PATH and no downward-API variables; no --kubeconfig unless given. */
function kubectlWithPlugin(args: string[], env: Record<string, string> = {}): Promise<CommandResult> {
  const base = { ...process.env };
  for (const key of ["POD_NAME", "POD_NAMESPACE", "POD_UID", "KUBECONFIG"]) delete base[key];
  return run(testEnv.kubectl, args, undefined, { ...base, PATH: `${pluginDir}:${process.env.PATH}`, ...env });
}

/** `kubectl lock ARGS -n NAMESPACE --kubeconfig (the test cluster's)`. */
const lock = (args: string[], extra: string[] = ["-n", ctx.namespace, "--kubeconfig", testEnv.kubeconfig]) =>
  kubectlWithPlugin(["lock", ...args, ...extra]);

describe("kubectl lock", () => {
  test("kubectl finds the plugin on PATH", async () => {
    const r = await kubectlWithPlugin(["plugin", "list"]);
    assert.match(r.stdout, new RegExp(`^${join(pluginDir, "kubectl-lock")}$`, "m"), show(r));
  });

  test("status, wait, run and release map to the CLI's commands", async () => {
    await ctx.api.createLock("shared");
    const waited = await lock(["wait", "--lock", "shared", "--claim", "first", "--timeout", "30s"]);
    assert.equal(waited.code, 0, show(waited));
    const token = /granted lock shared with fencing token (\d+)/.exec(waited.stdout)?.[1];
    assert.ok(token, show(waited));
    await ctx.api.waitForLock("shared", "held by first", (l) => l.status?.holders?.some((h) => h.claim === "first") === true);

    const status = await lock(["status", "shared"]);
    assert.equal(status.code, 0, show(status));
    assert.match(status.stdout, /^Lock: +shared$/m);
    assert.match(status.stdout, /^Holders \(1 of 1\):\n +CLAIM +HOLDER +CLUSTER +TOKEN +SINCE\n +first +first +- +(\d+) /m);
    assert.equal(/^ +first +first +- +(\d+) /m.exec(status.stdout)?.[1], token);

    const released = await lock(["release", "--claim", "first"]);
    assert.equal(released.code, 0, show(released));
    assert.match(released.stdout, /released lock shared \(claim first\)/);
    assert.equal((await ctx.api.getClaim("first"))?.status?.phase, "Released");

    // Flags before `--` are the plugin's, after it the command's own (here a --help for sh's $0).
    const ran = await kubectlWithPlugin(["lock", "run", "--lock", "shared", "-n", ctx.namespace, "--kubeconfig", testEnv.kubeconfig, "--",
      "sh", "-c", "echo token=$KUBELOCK_FENCING_TOKEN; echo \"$0\"", "--help"]);
    assert.equal(ran.code, 0, show(ran));
    assert.match(ran.stdout, /^token=\d+\n--help$/m);
    assert.ok(BigInt(/token=(\d+)/.exec(ran.stdout)![1]) > BigInt(token), "a new grant");
  });

  test("--context picks a context of the kubeconfig; KUBECONFIG is honoured as kubectl does", async () => {
    await ctx.api.createLock("contexts");
    // The test cluster's kubeconfig with another current context, on a server where nothing listens.
    const kc = kubeConfig();
    const real = kc.getCurrentContext();
    const bogus = new k8s.KubeConfig();
    bogus.loadFromOptions({
      clusters: [...kc.clusters, { name: "nowhere", server: "https://127.0.0.1:1", skipTLSVerify: true }],
      users: kc.users,
      contexts: [...kc.contexts, { name: "elsewhere", cluster: "nowhere", user: kc.getCurrentUser()!.name }],
      currentContext: "elsewhere",
    });
    const file = kubeconfigFile(bogus);

    const picked = await lock(["status", "contexts", "--context", real], ["-n", ctx.namespace, "--kubeconfig", file]);
    assert.equal(picked.code, 0, show(picked));
    assert.match(picked.stdout, /^Lock: +contexts$/m);
    const viaEnv = await kubectlWithPlugin(["lock", "status", "contexts", "--namespace", ctx.namespace, "--context", real], { KUBECONFIG: file });
    assert.equal(viaEnv.code, 0, show(viaEnv));

    const current = await lock(["status", "contexts"], ["-n", ctx.namespace, "--kubeconfig", file]);
    assert.equal(current.code, 1, `the current context's server is unreachable: ${show(current)}`);
    const missing = await lock(["status", "contexts", "--context", "missing"], ["-n", ctx.namespace, "--kubeconfig", file]);
    assert.equal(missing.code, 1, show(missing));
    assert.match(missing.stderr, /^kubectl lock status: cannot load the kubeconfig: context "missing" is not in the kubeconfig/m);
  });

  test("speaks as kubectl lock; other kubelock commands are not part of the plugin", async () => {
    const help = await lock(["status", "--help"], []);
    assert.equal(help.code, 0, show(help));
    assert.match(help.stdout, /^Usage: kubectl lock status LOCK \[flags\]/);
    assert.match(help.stdout, /--context NAME/);

    const notFound = await lock(["status", "absent"]);
    assert.equal(notFound.code, 5, show(notFound));
    assert.match(notFound.stderr, new RegExp(`^kubectl lock status: lock absent not found in namespace ${ctx.namespace}$`, "m"));

    const usage = await lock(["status"]);
    assert.equal(usage.code, 2, show(usage));
    assert.match(usage.stderr, /Run 'kubectl lock status --help' for usage\./);

    for (const name of ["operator", "hold", "renew"]) {
      const refused = await lock([name], []);
      assert.equal(refused.code, 2, show(refused));
      assert.match(refused.stderr, new RegExp(`kubectl lock: unknown command "${name}"`));
    }
    const top = await lock(["--help"], []);
    assert.equal(top.code, 0, show(top));
    assert.match(top.stdout, /^ {2}status +show a lock's holders/m);
  });

  test("the package installs the plugin's build as kubectl-lock; the krew manifest runs the same file", () => {
    const pkg = JSON.parse(readFileSync(join(repoRoot, "package.json"), "utf8")) as { bin: Record<string, string> };
    // tsconfig's outDir is dist and its rootDir the repository: src/cli/kubectl-lock.ts builds to this file.
    assert.equal(pkg.bin["kubectl-lock"], "dist/src/cli/kubectl-lock.js");
    const manifest = parse(readFileSync(join(repoRoot, "plugins/lock.yaml"), "utf8")) as {
      apiVersion: string; kind: string; metadata: { name: string };
      spec: { platforms: { bin: string; files: { from: string; to: string }[] }[] };
    };
    assert.equal(manifest.apiVersion, "krew.googlecontainertools.github.com/v1alpha2");
    assert.equal(manifest.kind, "Plugin");
    assert.equal(manifest.metadata.name, "lock", "krew runs it as kubectl lock");
    for (const platform of manifest.spec.platforms) {
      assert.equal(platform.bin, pkg.bin["kubectl-lock"]);
      assert.ok(platform.files.some((f) => f.from === "dist/src" && f.to === "dist/src"), "the build is in the archive");
      assert.ok(platform.files.some((f) => f.from === "node_modules"), "with its dependencies");
    }
  });
});
