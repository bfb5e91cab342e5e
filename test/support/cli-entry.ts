/**
 * How tests run the `kubelock` CLI: the bundle the image runs (dist/kubelock.js) when it is newer than every source
 * file (`make test` builds it first; it starts in a fraction of the time, which matters on a busy machine with
 * hundreds of processes to start), else the sources through tsx, so that a test run right after an edit never runs
 * old code.
 */
import { existsSync, readdirSync, statSync } from "node:fs";
import { join, resolve } from "node:path";

const repoRoot = resolve(__dirname, "..", "..");
let decided: { args: string[]; compiled: boolean } | undefined;

/** node arguments that start the CLI (then its own arguments follow); decided once per process. */
export function cliCommand(): { args: string[]; compiled: boolean } {
  return (decided ??= decide());
}

function decide(): { args: string[]; compiled: boolean } {
  const bundle = join(repoRoot, "dist/kubelock.js");
  if (!existsSync(bundle)) return { args: ["--import", "tsx", join(repoRoot, "src/cli/main.ts")], compiled: false };
  const builtAt = statSync(bundle).mtimeMs;
  const older = (dir: string): boolean => readdirSync(dir, { withFileTypes: true }).every((entry) => {
    const path = join(dir, entry.name);
    return entry.isDirectory() ? older(path) : statSync(path).mtimeMs <= builtAt;
  });
  if (older(join(repoRoot, "src"))) return { args: [bundle], compiled: true };
  return { args: ["--import", "tsx", join(repoRoot, "src/cli/main.ts")], compiled: false };
}
