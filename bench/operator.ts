/** The real operator for a benchmark: a fresh namespace, `kubelock operator` watching it, a claim watch. */
import { execFileSync, spawn } from "node:child_process";
import { appendFileSync, existsSync, readFileSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createNamespace, eventually } from "../test/support/env";
import { Api, startOperator, type OperatorProcess } from "../test/support/operator";
import { tempDir } from "../test/support/temp";
import type { BenchContext } from "./context";
import { ClaimWatch } from "./lib/claims";

export interface OperatorNamespace {
  namespace: string;
  api: Api;
  watch: ClaimWatch;
  operator: OperatorProcess;
  /** The operator's process id (for /proc), found among this process's children. */
  pid?: number;
  stop(): Promise<void>;
}

/**
 * The operator config: the built-in kubernetes backend (default) plus `redis` on the environment's Redis; with
 * `every`, also `etcd`, `zookeeper` and `postgresql` on the environment's servers, each under its own prefix.
 */
export function operatorConfig(ctx: BenchContext, keyPrefix: string, every = false): string {
  const v = ctx.variables;
  const backends = [`{ name: redis, type: redis, redis: { url: "${v.KUBELOCK_TEST_REDIS_URL}", keyPrefix: ${keyPrefix} } }`];
  if (every) {
    backends.push(
      `{ name: etcd, type: etcd, etcd: { endpoints: ["${v.KUBELOCK_TEST_ETCD_ENDPOINT}"], prefix: /${keyPrefix} } }`,
      `{ name: zookeeper, type: zookeeper, zookeeper: { connect: "${v.KUBELOCK_TEST_ZOOKEEPER_CONNECT}", rootPath: /${keyPrefix} } }`,
      `{ name: postgresql, type: postgresql, postgresql: { url: "${v.KUBELOCK_TEST_POSTGRESQL_URL}", table: ${keyPrefix.replace(/\W/g, "_")} } }`,
    );
  }
  return `defaultBackend: kubernetes\nclusterName: bench\nbackends:\n${backends.map((b) => `  - ${b}\n`).join("")}`;
}

/**
 * A fresh namespace and the operator for it, started by test/support/operator.ts; with `nodeFlags` (such as
 * --cpu-prof, which NODE_OPTIONS refuses) or `root` (another checkout of kubelock, e.g. an earlier commit)
 * the same command is spawned here with those flags, from that checkout, instead. With `compiled` it runs
 * the JavaScript that `make build` writes to dist/ (what the container image runs), built first if stale,
 * with the Node.js flags and the script the image runs (imageCommand).
 */
export async function operatorNamespace(
  ctx: BenchContext,
  prefix: string,
  options: {
    nodeFlags?: string[]; root?: string; compiled?: boolean; prepare?: (api: Api) => Promise<void>; syncTimeoutMs?: number;
    /** Called for every claim event from before the operator starts (a listener added later can miss its first grants). */
    onClaimEvent?: Parameters<ClaimWatch["on"]>[0];
    /** Configure every backend of the environment (operatorConfig), not only kubernetes and redis. */
    everyBackend?: boolean;
  } = {},
): Promise<OperatorNamespace> {
  const { nodeFlags, root, compiled, prepare, syncTimeoutMs, onClaimEvent, everyBackend } = options;
  if (compiled) ensureBuilt(ctx);
  const namespace = await createNamespace(prefix, ctx.kubeConfig);
  await prepare?.(new Api(namespace, ctx.kubeConfig));
  const watch = new ClaimWatch(namespace, ctx.kubeConfig); // before the operator: it sees every grant
  await watch.start();
  if (onClaimEvent) watch.on(onClaimEvent);
  const before = new Set(children());
  const config = operatorConfig(ctx, prefix, everyBackend);
  const operator = nodeFlags || root || compiled ? await spawnOperator(namespace, config, nodeFlags ?? [], root, compiled, undefined, syncTimeoutMs) : await startOperator({ namespace, config });
  const pid = children().find((p) => !before.has(p) && cmdline(p).includes(namespace));
  return {
    namespace, api: new Api(namespace, ctx.kubeConfig), watch, operator, pid,
    async stop() {
      watch.stop();
      await operator.stop();
    },
  };
}

/** Process ids of this process's children. */
function children(): number[] {
  const ids: number[] = [];
  for (const task of readdirSync(`/proc/${process.pid}/task`)) {
    try {
      ids.push(...readFileSync(`/proc/${process.pid}/task/${task}/children`, "utf8").split(/\s+/).filter(Boolean).map(Number));
    } catch {
      // a thread that ended meanwhile
    }
  }
  return ids;
}

function cmdline(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").replace(/\0/g, " ");
  } catch {
    return "";
  }
}

/**
 * `node FLAGS --import tsx src/cli/main.ts operator ...` (or, compiled, as the image runs it) for one namespace, as startOperator
 * runs it, on the cluster of `kubeconfig` (default: the environment's). BENCH_OPERATOR_LOG_LEVEL sets its --log-level;
 * BENCH_OPERATOR_LOG names a file its output is appended to as it comes (to time its phases);
 * BENCH_OPERATOR_NODE_FLAGS adds Node.js flags (space-separated, e.g. --heapsnapshot-signal=SIGUSR2).
 */
export async function spawnOperator(namespace: string, config: string, nodeFlags: string[], repoRoot = join(__dirname, ".."), compiled = false,
  kubeconfig = process.env.KUBECONFIG!, syncTimeoutMs = 60_000): Promise<OperatorProcess> {
  const file = join(tempDir("kubelock-bench-"), "config.yaml");
  writeFileSync(file, config);
  const image = compiled ? imageCommand(repoRoot) : undefined;
  const entry = image ? [...image.flags, join(repoRoot, image.script)] : ["--import", "tsx", join(repoRoot, "src/cli/main.ts")];
  const extraFlags = (process.env.BENCH_OPERATOR_NODE_FLAGS ?? "").split(" ").filter(Boolean);
  const child = spawn(process.execPath, [...nodeFlags, ...extraFlags, ...entry, "operator", "--kubeconfig", kubeconfig,
    "--watch-namespace", namespace, "--metrics-bind-address", "0", "--health-probe-bind-address", "0", "--config", file,
    ...(process.env.BENCH_OPERATOR_LOG_LEVEL ? ["--log-level", process.env.BENCH_OPERATOR_LOG_LEVEL] : [])], { cwd: repoRoot, stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  const logFile = process.env.BENCH_OPERATOR_LOG;
  const collect = (d: Buffer) => {
    output += d;
    if (logFile) appendFileSync(logFile, d);
  };
  child.stdout.on("data", collect);
  child.stderr.on("data", collect);
  const exited = new Promise<void>((resolve) => child.on("exit", () => resolve()));
  try {
    await eventually("operator caches synced", () => (output.includes("caches synced") ? true : undefined), syncTimeoutMs);
  } catch (err) {
    // What the operator was doing: its last lines (the report keeps the error message).
    if (child.exitCode === null) child.kill("SIGTERM");
    await exited;
    throw new Error(`${(err as Error).message}; operator's last output: ${output.trim().split("\n").slice(-5).join(" | ") || "none"}`, { cause: err });
  }
  const end = async (signal: NodeJS.Signals) => {
    if (child.exitCode === null) child.kill(signal);
    await exited;
  };
  // The bench runs as admin and never fails on refusals: nothing to excuse.
  return { output: () => output, stop: () => end("SIGTERM"), kill: () => end("SIGKILL"), excuseRefusals: () => undefined };
}

/**
 * How the container image runs kubelock: the Node.js flags and the script of the Dockerfile's ENTRYPOINT
 * (`node FLAGS /app/SCRIPT`; the image's /app is the repository root).
 */
export function imageCommand(repoRoot: string): { flags: string[]; script: string } {
  const line = readFileSync(join(repoRoot, "Dockerfile"), "utf8").split("\n").find((l) => l.startsWith("ENTRYPOINT ["));
  if (!line) throw new Error("the Dockerfile has no ENTRYPOINT [...] line");
  const entry = JSON.parse(line.slice("ENTRYPOINT ".length)) as string[];
  return { flags: entry.slice(1, -1), script: entry[entry.length - 1].replace(/^\/app\//, "") };
}

/** Builds dist/ (`npm run build`: tsc, then the bundle) unless the image's script is newer than every source file. */
function ensureBuilt(ctx: BenchContext): void {
  const repoRoot = join(__dirname, "..");
  const built = join(repoRoot, imageCommand(repoRoot).script);
  const newest = (dir: string): number => Math.max(0, ...readdirSync(dir, { withFileTypes: true })
    .map((e) => (e.isDirectory() ? newest(join(dir, e.name)) : statSync(join(dir, e.name)).mtimeMs)));
  if (existsSync(built) && statSync(built).mtimeMs >= newest(join(repoRoot, "src"))) return;
  ctx.log("building dist/ (npx tsc -p tsconfig.build.json, then node hack/bundle.mjs)");
  execFileSync(process.execPath, [join(repoRoot, "node_modules/typescript/bin/tsc"), "-p", "tsconfig.build.json"], { cwd: repoRoot, stdio: "inherit" });
  execFileSync(process.execPath, [join(repoRoot, "hack/bundle.mjs")], { cwd: repoRoot, stdio: "inherit" });
}
