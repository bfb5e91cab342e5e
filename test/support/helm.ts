/**
 * A real helm against the test API server: hack/tools/helm.sh builds it once from its Go module (a few
 * minutes on a fresh machine), then only prints the cached binary's path. Each runner keeps helm's config,
 * cache and data in a directory of its own.
 */
import assert from "node:assert/strict";
import { join, resolve } from "node:path";
import { run, testEnv, type CommandResult } from "./env";
import { tempDir } from "./temp";

export const chartDir = join(resolve(__dirname, "..", ".."), "charts", "kubelock");

export interface Helm {
  /** helm ARGS, whatever its exit code. */
  run(args: string[]): Promise<CommandResult>;
  /** helm ARGS, which must exit 0; its stdout. */
  must(args: string[]): Promise<string>;
}

export async function helmRunner(): Promise<Helm> {
  const built = await run("bash", [join(chartDir, "..", "..", "hack", "tools", "helm.sh")]);
  assert.equal(built.code, 0, `hack/tools/helm.sh: ${built.stderr}`);
  const binary = built.stdout.trim();
  const home = tempDir("kubelock-helm-");
  const env = {
    ...process.env, KUBECONFIG: testEnv.kubeconfig,
    HELM_CONFIG_HOME: join(home, "config"), HELM_CACHE_HOME: join(home, "cache"), HELM_DATA_HOME: join(home, "data"),
  };
  const helm: Helm = {
    run: (args) => run(binary, args, undefined, env),
    async must(args) {
      const r = await helm.run(args);
      assert.equal(r.code, 0, `helm ${args.join(" ")}: exit ${r.code}\n${r.stderr}`);
      return r.stdout;
    },
  };
  return helm;
}
