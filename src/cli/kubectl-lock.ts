#!/usr/bin/env node
/**
 * `kubectl lock`: kubelock as a kubectl plugin. On PATH as `kubectl-lock` (the package's `bin`, or krew with
 * plugins/lock.yaml), it is what kubectl runs for `kubectl lock ...`, with the arguments after `lock`:
 * `kubectl lock status|wait|run|release` are those kubelock commands, with kubectl's flags `-n/--namespace`,
 * `--kubeconfig` and `--context` (kubectl passes its flags to a plugin only when they follow its name).
 */
import { dispatch, EXIT_CODES_HELP, setProgramName, type Command } from "./common";
import { releaseCommand, releaseHelp } from "./release";
import { runCommand, runHelp } from "./run";
import { statusCommand, statusHelp } from "./status";
import { waitCommand, waitHelp } from "./wait";

const PROGRAM = "kubectl lock";
// The workload commands only (not the operator's, whose imports load every backend's client).
const commands: Record<string, Command> = {
  status: { run: statusCommand, summary: "show a lock's holders and waiting queue", help: statusHelp },
  wait: { run: waitCommand, summary: "ask for a lock and wait until it is granted", help: waitHelp },
  run: { run: runCommand, summary: "hold a lock while a command runs, like flock: run --lock L -- CMD", help: runHelp },
  release: { run: releaseCommand, summary: "end a claim's grant", help: releaseHelp },
};

const usage = `Usage: ${PROGRAM} COMMAND [flags]

Distributed locks (kubelock.io DistributedLocks and LockClaims) from kubectl.

Commands:
${Object.entries(commands).map(([name, c]) => `  ${name.padEnd(10)} ${c.summary}`).join("\n")}

Flags as kubectl spells them, after the command: -n/--namespace, --kubeconfig, --context.
Run '${PROGRAM} COMMAND --help' for a command's flags.

${EXIT_CODES_HELP}`;

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === "-h" || name === "--help" || name === "help") {
    console.log(usage);
    return name ? 0 : 2;
  }
  const command = Object.hasOwn(commands, name) ? commands[name] : undefined;
  if (!command) {
    console.error(`${PROGRAM}: unknown command "${name}"\n\n${usage}`);
    return 2;
  }
  setProgramName(PROGRAM);
  // Flags up to `--` are ours; after it, `run`'s COMMAND and its own flags.
  const ours = rest.includes("--") ? rest.slice(0, rest.indexOf("--")) : rest;
  if (ours.includes("-h") || ours.includes("--help")) {
    console.log(command.help.replaceAll(`kubelock ${name}`, `${PROGRAM} ${name}`));
    return 0;
  }
  return dispatch(PROGRAM, name, command, rest);
}

main(process.argv.slice(2)).then((code) => process.exit(code));
