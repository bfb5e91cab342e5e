/** `kubelock operator`: runs the controllers until SIGTERM or SIGINT. */
import { parseArgs } from "node:util";
import { ConfigError, loadConfig } from "../config";
import { createLogger, type Level } from "../log";
import { startOperator } from "../operator";
import { loadKubeConfig } from "./kubeconfig";

export const operatorHelp = `Usage: kubelock operator [flags]

Runs the kubelock controllers: grants LockClaims on DistributedLocks through the configured backends.

Flags:
  --config FILE        operator config (YAML); default: only the built-in kubernetes backend
  --kubeconfig FILE    default: KUBECONFIG, then ~/.kube/config, then in-cluster
  --watch-namespace NS only this namespace's locks, claims and pods (default: all)
  --log-level LEVEL    debug | info | error (default info)
  -h, --help           this help

Exit codes: 0 stopped by a signal, 1 runtime failure, 2 bad flags or config.`;

export async function operatorCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      config: { type: "string" },
      kubeconfig: { type: "string" },
      "watch-namespace": { type: "string" },
      "log-level": { type: "string", default: "info" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    console.log(operatorHelp);
    return 0;
  }
  const level = values["log-level"] as Level;
  if (!["debug", "info", "error"].includes(level)) {
    console.error(`kubelock operator: --log-level must be debug, info or error, not "${level}"`);
    return 2;
  }
  let config;
  try {
    config = loadConfig(values.config);
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(err.message);
      return 2;
    }
    throw err;
  }
  const log = createLogger(level, { logger: "kubelock" });
  const operator = await startOperator({ kubeConfig: loadKubeConfig(values.kubeconfig), config, log, namespace: values["watch-namespace"] });
  log.info("operator started", { defaultBackend: config.defaultBackend, clusterName: config.clusterName, backends: config.backends.map((b) => b.name) });
  await new Promise<void>((resolve) => {
    process.once("SIGTERM", resolve);
    process.once("SIGINT", resolve);
  });
  log.info("stopping");
  await operator.stop();
  return 0;
}
