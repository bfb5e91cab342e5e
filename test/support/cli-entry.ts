/**
 * How tests run the `kubelock` CLI: the compiled dist/ when it is newer than every source file (`make test`
 * builds it first; it starts in a fraction of the time, which matters on a busy machine with hundreds of
 * processes to start), else the sources through tsx, so that a test run right after an edit never runs old code.
 */
import { existsSync, readdirSync, statSync } from "node:fs";
import { join, relative, resolve } from "node:path";

const repoRoot = resolve(__dirname, "..", "..");
let decided: { args: string[]; compiled: boolean } | undefined;

/** node arguments that start the CLI (then its own arguments follow); decided once per process. */
export function cliCommand(): { args: string[]; compiled: boolean } {
  return (decided ??= decide());
}

function decide(): { args: string[]; compiled: boolean } {
  const compiled = join(repoRoot, "dist/src/cli/main.js");
  const fresh = (dir: string): boolean => readdirSync(dir, { withFileTypes: true }).every((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return fresh(path);
    if (!entry.name.endsWith(".ts")) return true;
    const js = join(repoRoot, "dist", relative(repoRoot, path)).replace(/\.ts$/, ".js");
    return existsSync(js) && statSync(js).mtimeMs >= statSync(path).mtimeMs;
  });
  if (existsSync(compiled) && fresh(join(repoRoot, "src"))) return { args: [compiled], compiled: true };
  return { args: ["--import", "tsx", join(repoRoot, "src/cli/main.ts")], compiled: false };
}
