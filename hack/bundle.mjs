/**
 * `npm run build`'s second step: the kubelock CLI (operator included) as one file, dist/kubelock.js, which the
 * container image runs. @kubernetes/client-node is bundled in, so only the parts kubelock calls are kept: loaded
 * whole, its generated API code costs about 40 MiB more resident memory than bundled. Every other dependency stays
 * an ordinary require() of node_modules (native addons and files read at run time among them), and a backend's
 * client is still loaded only when that backend is configured.
 */
import { build } from "esbuild";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const { dependencies } = JSON.parse(readFileSync(join(root, "package.json"), "utf8"));
const BUNDLED = ["@kubernetes/client-node"];

await build({
  absWorkingDir: root,
  entryPoints: ["src/cli/main.ts"],
  outfile: "dist/kubelock.js",
  bundle: true,
  platform: "node",
  target: "node20",
  format: "cjs",
  external: Object.keys(dependencies).filter((name) => !BUNDLED.includes(name)),
  // Whitespace and syntax only: names stay, so stack traces and logs read as the source does.
  minifyWhitespace: true,
  minifySyntax: true,
  legalComments: "eof",
  logLevel: "warning",
});
