/**
 * Test entry point: starts what the selected tests need (control plane, backend servers, CRDs) once,
 * runs them with node's test runner, and tears everything down, whatever happens.
 *
 *   tsx test/run.ts                      every test (unit, integration, conformance, e2e)
 *   tsx test/run.ts test/unit/x.test.ts  only those files; unit-only runs start nothing
 *   tsx test/run.ts --node [files]       the end-to-end tier on a real node (test/env/node.ts): by default
 *                                        every test/node file; files under test/node/ imply --node
 *
 * A file whose name says multicluster (or multi-cluster) gets a second, independent cluster for the
 * whole run; in the end-to-end tier, with a real node of its own. Without one, a single cluster starts.
 *
 * Environment: KUBEBUILDER_ASSETS (ready binaries), USE_EXISTING_CLUSTER=true + KUBECONFIG (a real
 * cluster instead of the local control plane), KUBELOCK_TEST_CONCURRENCY (test files at once, default 2).
 */
import { spawn } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { join, relative, resolve } from "node:path";
import { startEnvironment, type Environment } from "./env/environment";

const repoRoot = resolve(__dirname, "..");
const suites = ["unit", "integration", "conformance", "e2e"];

function selectFiles(args: string[], node: boolean): string[] {
  if (args.length > 0) return args.map((a) => relative(repoRoot, resolve(a)));
  return (node ? ["node"] : suites).flatMap((suite) => {
    const dir = join(repoRoot, "test", suite);
    if (!existsSync(dir)) return [];
    return readdirSync(dir).filter((f) => f.endsWith(".test.ts")).sort().map((f) => `test/${suite}/${f}`);
  });
}

/** The test runner's process group (see runNodeTests), killed whole when the run ends or is interrupted. */
let testGroup: number | undefined;
const killTestGroup = () => {
  if (testGroup === undefined) return;
  try {
    process.kill(-testGroup, "SIGKILL");
  } catch {
    // nothing left in it
  }
};

/**
 * Runs the files with node's test runner; the end-to-end tier's files one at a time (they share the node's
 * operator). The runner leads a process group of its own: a test file stopped at its timeout leaves whatever it
 * started (a control plane of its own, operators) in that group, and it all goes when the run ends.
 */
function runNodeTests(files: string[], variables: Record<string, string>, node: boolean): Promise<number> {
  const concurrency = process.env.KUBELOCK_TEST_CONCURRENCY ?? (node ? "1" : "2");
  // --test-force-exit: a file whose tests and after-hooks are all done exits even if a client library left a
  // handle behind (a gRPC reconnect timer once kept a finished etcd file alive until the 600 s timeout).
  const args = ["--import", "tsx", "--test", "--test-force-exit", `--test-concurrency=${concurrency}`, "--test-timeout=600000", ...files];
  return new Promise((done) => {
    const child = spawn(process.execPath, args, { cwd: repoRoot, stdio: "inherit", env: { ...process.env, ...variables }, detached: true });
    testGroup = child.pid;
    child.on("close", (code) => {
      killTestGroup();
      done(code ?? 1);
    });
  });
}

async function main(): Promise<number> {
  const args = process.argv.slice(2);
  const files = selectFiles(args.filter((a) => a !== "--node"), args.includes("--node"));
  const node = args.includes("--node") || files.some((f) => f.startsWith("test/node/"));
  if (files.length === 0) {
    console.error("no test files selected");
    return 1;
  }
  const needsCluster = files.some((f) => !f.startsWith("test/unit/"));
  let environment: Environment | undefined;
  const shutdown = async (signal: string) => {
    console.error(`\n${signal}: stopping the tests and the test environment`);
    killTestGroup();
    await environment?.stop();
    process.exit(130);
  };
  process.once("SIGINT", () => void shutdown("SIGINT"));
  process.once("SIGTERM", () => void shutdown("SIGTERM"));
  const clusters = files.some((f) => /multi-?cluster/.test(f)) ? 2 : 1;
  try {
    if (needsCluster) {
      environment = await startEnvironment(node ? { node, clusters, services: ["redis"] } : { clusters, services: ["redis", "zookeeper", "etcd", "postgresql"] });
    }
    return await runNodeTests(files, environment?.variables ?? {}, node);
  } finally {
    if (environment) {
      console.error("environment: stopping every process and removing temporary directories");
      await environment.stop();
    }
  }
}

main().then(
  (code) => process.exit(code),
  (err: Error) => {
    console.error(`test run failed: ${err.stack ?? err.message}`);
    process.exit(1);
  },
);
