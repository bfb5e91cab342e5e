#!/usr/bin/env node
/** The `kubelock` command: the operator and the tools workloads and people use. */
import { dispatch, type Command } from "./common";
import { holdCommand, holdHelp } from "./hold";
import { operatorCommand, operatorHelp } from "./operator";
import { releaseCommand, releaseHelp } from "./release";
import { renewCommand, renewHelp } from "./renew";
import { runCommand, runHelp } from "./run";
import { statusCommand, statusHelp } from "./status";
import { waitCommand, waitHelp } from "./wait";

const commands: Record<string, Command> = {
  operator: { run: operatorCommand, summary: "run the controllers", help: operatorHelp },
  wait: { run: waitCommand, summary: "ask for a lock and wait until it is granted (init containers)", help: waitHelp },
  hold: { run: holdCommand, summary: "native sidecar: hold a lock for the pod, stop its work if the grant is lost", help: holdHelp },
  release: { run: releaseCommand, summary: "end this pod's (or a claim's) grant", help: releaseHelp },
  renew: { run: renewCommand, summary: "heartbeat: move a claim's spec.renewTime forward", help: renewHelp },
  run: { run: runCommand, summary: "hold a lock while a command runs, like flock: run --lock L -- CMD", help: runHelp },
  status: { run: statusCommand, summary: "show a lock's holders and waiting queue", help: statusHelp },
};

const usage = `Usage: kubelock COMMAND [flags]

Commands:
${Object.entries(commands).map(([name, c]) => `  ${name.padEnd(10)} ${c.summary}`).join("\n")}

Run 'kubelock COMMAND --help' for a command's flags.`;

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === "-h" || name === "--help" || name === "help") {
    console.log(usage);
    return name ? 0 : 2;
  }
  const command = commands[name];
  if (!command) {
    console.error(`kubelock: unknown command "${name}"\n\n${usage}`);
    return 2;
  }
  return dispatch("kubelock", name, command, rest);
}

main(process.argv.slice(2)).then((code) => process.exit(code));
