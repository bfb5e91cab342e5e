/**
 * Holders that use a lock through the real CLI, as a workload would: `kubelock run --lock L -- CMD`, each
 * reaching the API server through a relay of its own (so the nemesis can make ONE holder's API connection
 * half-open). CMD is a tiny node program that reports to the section server below: the fenced register
 * records its critical section from its start to the moment its process is gone (its connection closes),
 * so a command that outlives its grant shows up as overlapping the next holder's section.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { createServer, type Server, type Socket } from "node:net";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import * as k8s from "@kubernetes/client-node";
import type { Api } from "../support/operator";
import { cliCommand } from "../support/cli-entry";
import type { FencedRegister, Section } from "./register";
import { Relays } from "./relays";
import { errorText, now, Random, retry, sleep } from "./util";

/**
 * The command `kubelock run` runs (`node -e SECTION_COMMAND PORT`): tells the section server it entered,
 * with the token `kubelock run` gave it and when it sent that (wall clock ms), and runs until told to leave
 * (or until the server goes).
 */
export const SECTION_COMMAND = [
  "const s = require('net').connect(Number(process.argv[1]), '127.0.0.1', () =>",
  "  s.write(['enter', process.env.KUBELOCK_LOCK, process.env.KUBELOCK_CLAIM, process.env.KUBELOCK_FENCING_TOKEN, Date.now()].join(' ') + '\\n'));",
  "s.on('data', (d) => { if (String(d).includes('leave')) process.exit(0); });",
  "s.on('close', () => process.exit(0));",
  "s.on('error', () => process.exit(1));",
].join("\n");

/** A command inside its critical section. */
interface Inside {
  claim: string;
  socket: Socket;
  section: Section;
  timer?: NodeJS.Timeout;
  /** Kept inside (not told to leave) while its holder's connection is half-open. */
  held: boolean;
}

/**
 * Accepts the commands' reports: `enter LOCK CLAIM TOKEN` enters LOCK's register (a rejected token closes
 * the connection at once); after the hold the server writes `leave`; the section ends when the
 * connection closes, that is when the command's process has exited.
 */
export class SectionServer {
  private server?: Server;
  private readonly inside = new Map<string, Inside>();

  constructor(private readonly registers: Map<string, FencedRegister>, private readonly random: Random, private readonly holdMs: [number, number]) {}

  get port(): number {
    return (this.server?.address() as { port: number } | null)?.port ?? 0;
  }

  async start(): Promise<void> {
    this.server = createServer((socket) => {
      let buffer = "";
      socket.on("error", () => socket.destroy());
      socket.on("data", (d) => {
        buffer += d;
        const line = buffer.split("\n")[0];
        if (buffer.includes("\n")) this.enter(socket, line.split(" "));
      });
    });
    await new Promise<void>((resolve) => this.server!.listen(0, "127.0.0.1", () => resolve()));
  }

  private enter(socket: Socket, [verb, lock, claim, token, sent]: string[]): void {
    const register = this.registers.get(lock);
    if (verb !== "enter" || !register || !/^\d+$/.test(token ?? "")) {
      socket.destroy();
      return;
    }
    // When the command sent it, on this process's clock: a busy harness may read the line much later.
    const sentAt = Number(sent) - performance.timeOrigin;
    const section = register.enter(`cli:${claim}`, claim, BigInt(token), Number.isFinite(sentAt) ? sentAt : undefined);
    if (!section) {
      socket.destroy();
      return;
    }
    const entry: Inside = { claim, socket, section, held: false };
    this.inside.set(claim, entry);
    socket.on("close", () => {
      register.leave(section);
      clearTimeout(entry.timer);
      this.inside.delete(claim);
    });
    entry.timer = setTimeout(() => this.tellToLeave(entry), this.random.int(...this.holdMs));
  }

  private tellToLeave(entry: Inside): void {
    if (!entry.held) entry.socket.write("leave\n");
  }

  /** The claims whose commands are inside now (not held). */
  get claimsInside(): string[] {
    return [...this.inside.values()].filter((e) => !e.held).map((e) => e.claim);
  }

  /** Keeps `claim`'s command inside until `release`; false if it is not inside. */
  hold(claim: string): boolean {
    const entry = this.inside.get(claim);
    if (!entry) return false;
    entry.held = true;
    clearTimeout(entry.timer);
    return true;
  }

  release(claim: string): void {
    const entry = this.inside.get(claim);
    if (!entry) return;
    entry.held = false;
    this.tellToLeave(entry);
  }

  async stop(): Promise<void> {
    for (const entry of this.inside.values()) entry.socket.destroy();
    if (this.server) await new Promise<void>((resolve) => this.server!.close(() => resolve()));
  }
}

/** One `kubelock run` invocation. */
export interface CliRecord {
  name: string;
  lock: string;
  worker: string;
  /** When `kubelock run` was started: its claim was created after this. */
  created: number;
  exitCode?: number | null;
  /** The last lines of its stderr. */
  stderr?: string;
}

export interface CliHolderContext {
  api: Api;
  kubeconfig: string;
  apiServer: string;
  namespace: string;
  logDir: string;
  server: SectionServer;
  leaseSeconds: number;
  records: CliRecord[];
  stopping: () => boolean;
  deadline: () => number;
  report: (line: string) => void;
}

/** A loop of `kubelock run` invocations on one lock, through its own API server relay. */
export class CliHolder {
  private relays?: Relays;
  private kubeconfig = "";
  private child?: ChildProcess;
  private current?: string;
  private seq = 0;

  constructor(readonly id: string, readonly lock: string, private readonly ctx: CliHolderContext) {}

  /** The claim it runs with now, if any. */
  get claim(): string | undefined {
    return this.current;
  }

  async run(): Promise<void> {
    const ctx = this.ctx;
    this.relays = await Relays.start({ apiserver: ctx.apiServer }, ["apiserver"]);
    this.kubeconfig = this.relays.writeKubeconfig(ctx.kubeconfig, join(ctx.logDir, `${this.id}.kubeconfig`));
    try {
      for (let cycle = 0; cycle < 100_000 && !ctx.stopping(); cycle++) {
        try {
          await this.cycle();
        } catch (err) {
          ctx.report(`cli holder ${this.id}: ${errorText(err)}`);
          if (now() > ctx.deadline()) return;
          await sleep(200);
        }
      }
    } finally {
      await this.relays.stop();
    }
  }

  /** Makes its API connection half-open (open, silent); `heal` relays again. */
  partition(): () => void {
    this.relays?.blackhole("apiserver");
    return () => this.relays?.restore("apiserver");
  }

  private async cycle(): Promise<void> {
    const ctx = this.ctx;
    const record: CliRecord = { name: `${this.id}-${this.seq++}`, lock: this.lock, worker: this.id, created: now() };
    ctx.records.push(record);
    const args = [
      ...cliCommand().args, "run", "--lock", this.lock, "--claim", record.name, "--lease-duration", `${ctx.leaseSeconds}s`, "--grace-period", "1s",
      "-n", ctx.namespace, "--kubeconfig", this.kubeconfig, "--", process.execPath, "-e", SECTION_COMMAND, String(ctx.server.port),
    ];
    const base = { ...process.env };
    for (const key of ["POD_NAME", "POD_NAMESPACE", "POD_UID"]) delete base[key];
    // Its own process group, so whatever is left of it can be stopped as a whole at the end.
    const child = spawn(process.execPath, args, { env: base, stdio: ["ignore", "ignore", "pipe"], detached: true });
    this.child = child;
    this.current = record.name;
    let stderr = "";
    child.stderr!.on("data", (d) => (stderr = (stderr + d).slice(-2000)));
    const exited = new Promise<number | null>((done) => child.on("exit", (code, signal) => done(code ?? (signal ? -1 : null))));
    try {
      // A run ends by itself; past the run's deadline whatever is left is stopped.
      const timer = new Promise<"late">((done) => {
        const check = setInterval(() => now() > ctx.deadline() && (clearInterval(check), done("late")), 500);
        void exited.finally(() => clearInterval(check));
      });
      const first = await Promise.race([exited, timer]);
      if (first === "late") this.kill();
      record.exitCode = await exited;
      record.stderr = stderr.split("\n").slice(-4).join("\n");
    } finally {
      this.current = undefined;
      this.child = undefined;
    }
    // A claim left behind (the run was killed, or lost its API connection) is deleted directly.
    await retry(`delete claim ${record.name}`, () => ctx.api.deleteClaim(record.name).catch((err) => {
      if (err instanceof k8s.ApiException && err.code === 404) return;
      throw err;
    }), ctx.deadline());
  }

  /** SIGKILL to its whole process group (kubelock run and its command). */
  kill(): void {
    const pid = this.child?.pid;
    if (pid === undefined) return;
    try {
      process.kill(-pid, "SIGKILL");
    } catch {
      // already gone
    }
  }
}
