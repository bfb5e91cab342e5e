/** Runs the real `kubelock` CLI as a process, as a workload would, outside any pod unless told. */
import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import type * as k8s from "@kubernetes/client-node";
import type { LockClaim } from "../../src/api/types";
import { cliCommand } from "./cli-entry";
import { eventually, type CommandResult } from "./env";
import type { Api } from "./operator";
import { tempDir } from "./temp";

const repoRoot = resolve(__dirname, "..", "..");

export type CliResult = CommandResult & { signal: NodeJS.Signals | null };

export interface CliProcess {
  child: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  exited: Promise<CliResult>;
}

/** Starts `kubelock ARGS` with the test's environment minus the downward-API variables, plus `env`. */
export function startCli(args: string[], env: Record<string, string> = {}): CliProcess {
  const base = { ...process.env };
  for (const key of ["POD_NAME", "POD_NAMESPACE", "POD_UID"]) delete base[key];
  const child = spawn(process.execPath, [...cliCommand().args, ...args], { cwd: repoRoot, env: { ...base, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout!.on("data", (d) => (stdout += d));
  child.stderr!.on("data", (d) => (stderr += d));
  const exited = new Promise<CliResult>((done) => child.on("close", (code, signal) => done({ code: code ?? -1, signal, stdout, stderr })));
  return { child, stdout: () => stdout, stderr: () => stderr, exited };
}

/**
 * The process's result once it has exited and its output closed, or a failure after `ms` (a process
 * it left behind may hold its output open).
 */
export async function endedWithin(cli: CliProcess, ms: number): Promise<CliResult> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`kubelock did not end within ${ms}ms; its stderr:\n${cli.stderr()}`)), ms);
  });
  try {
    return await Promise.race([cli.exited, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** Runs `kubelock ARGS` to completion. */
export const kubelock = (args: string[], env: Record<string, string> = {}) => startCli(args, env).exited;

/** A result for assertion messages. */
export const show = (r: CommandResult) => `exit ${r.code}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`;

/** Writes `kc` to a fresh file, for `--kubeconfig`. */
export function kubeconfigFile(kc: k8s.KubeConfig): string {
  const file = join(tempDir("kubelock-kubeconfig-"), "config");
  writeFileSync(file, kc.exportConfig());
  return file;
}

/** The claim `kubelock run` made for `lock` (named LOCK-run-...), once Granted. */
export const grantedRunClaim = (api: Api, lock: string) => eventually(`a granted run claim for ${lock}`, async () =>
  (await api.listClaims()).find((c: LockClaim) => c.spec.lockName === lock && c.metadata.name.startsWith(`${lock}-run-`) && c.status?.phase === "Granted"));

/** The pid `kubelock run` reports for its command. */
export const commandPid = (run: CliProcess) => eventually("the command started", () => {
  const match = /started \(pid (\d+)/.exec(run.stderr());
  return match ? Number(match[1]) : undefined;
});

/**
 * Whether process `pid` runs: it exists and is not a zombie (an exited orphan whose new parent has not
 * reaped it yet is dead for every purpose here).
 */
export function running(pid: number): boolean {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return false;
  }
  const state = stat.slice(stat.lastIndexOf(")") + 2).split(" ")[0];
  return state !== "Z" && state !== "X";
}
