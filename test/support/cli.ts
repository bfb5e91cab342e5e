/** Runs the real `kubelock` CLI as a process, as a workload would, outside any pod unless told. */
import { spawn, type ChildProcess } from "node:child_process";
import { join, resolve } from "node:path";
import type { CommandResult } from "./env";

const repoRoot = resolve(__dirname, "..", "..");
const cli = join(repoRoot, "src/cli/main.ts");

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
  const child = spawn(process.execPath, ["--import", "tsx", cli, ...args], { cwd: repoRoot, env: { ...base, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout!.on("data", (d) => (stdout += d));
  child.stderr!.on("data", (d) => (stderr += d));
  const exited = new Promise<CliResult>((done) => child.on("close", (code, signal) => done({ code: code ?? -1, signal, stdout, stderr })));
  return { child, stdout: () => stdout, stderr: () => stderr, exited };
}

/** Runs `kubelock ARGS` to completion. */
export const kubelock = (args: string[], env: Record<string, string> = {}) => startCli(args, env).exited;

/** A result for assertion messages. */
export const show = (r: CommandResult) => `exit ${r.code}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`;
