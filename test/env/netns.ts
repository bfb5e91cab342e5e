/**
 * A network namespace of the test environment's own, for a real node: the control plane, containerd,
 * the kubelet and kube-proxy run inside it (`launch`), so their addresses, routes, iptables rules and
 * pod networks never touch the machine's (nor another node's namespace). It has loopback and a veth
 * pair whose first end carries the node address (one /24 per namespace), with a dead-end default
 * route (the kubelet and kube-proxy want one; nothing leaves).
 * Ports inside are reached from the machine's loopback through relays (`expose`), and servers on the
 * machine's loopback from inside (`reach`). `destroy()` stops the
 * relays and deletes the namespace, and with it every rule, route and link made inside.
 */
import { existsSync, mkdirSync } from "node:fs";
import { connect } from "node:net";
import { join } from "node:path";
import { ManagedProcess, runCommand } from "./process";

/** Starts a named process (logging to a file); the default runs it as is, a namespace's runs it inside. */
export type Launcher = (name: string, command: string, args: string[], logFile: string, env?: NodeJS.ProcessEnv) => ManagedProcess;

export const launchHere: Launcher = (name, command, args, logFile, env) => new ManagedProcess(name, command, args, logFile, env);

export class NetworkNamespace {
  private readonly relays: ManagedProcess[] = [];

  readonly path: string;

  /** `address`: the node's address inside (the kubelet's InternalIP, the API server's advertised address). */
  private constructor(readonly name: string, private readonly dir: string, readonly address: string) {
    this.path = `/run/netns/${name}`;
  }

  /**
   * Creates the namespace `name` with the node address `address` (default 10.250.0.1; its /24 is the
   * node link's, .254 the dead-end gateway); `dir` (existing, one per namespace) holds the relays'
   * sockets and logs.
   */
  static async create(name: string, dir: string, address = "10.250.0.1"): Promise<NetworkNamespace> {
    const ns = new NetworkNamespace(name, dir, address);
    await runCommand("ip", ["netns", "add", name]);
    try {
      const ip = (...args: string[]) => runCommand("ip", ["-n", name, ...args]);
      await ip("link", "set", "lo", "up");
      await ip("link", "add", "node0", "type", "veth", "peer", "name", "node1");
      await ip("addr", "add", `${ns.address}/24`, "dev", "node0");
      await ip("link", "set", "node0", "up");
      await ip("link", "set", "node1", "up");
      await ip("route", "add", "default", "via", address.replace(/\d+$/, "254"), "dev", "node0");
      await ns.run("sysctl", ["-q", "-w", "net.ipv4.ip_forward=1"]);
    } catch (err) {
      await ns.destroy();
      throw err;
    }
    return ns;
  }

  /** Starts processes inside the namespace: `nsenter --net` only, so they share the machine's mounts. */
  readonly launch: Launcher = (name, command, args, logFile, env) =>
    new ManagedProcess(name, "nsenter", [`--net=${this.path}`, "--", command, ...args], logFile, env);

  /** Runs a command inside the namespace to completion. */
  run(command: string, args: string[]): Promise<string> {
    return runCommand("nsenter", [`--net=${this.path}`, "--", command, ...args]);
  }

  /**
   * Makes TCP `port` of the namespace's loopback reachable on the machine's 127.0.0.1:`port`: socat
   * listening on the machine, handing each connection over a Unix socket (which no network namespace
   * owns) to a socat inside that connects to the port. Resolves once the machine side listens.
   */
  async expose(port: number): Promise<void> {
    const relayDir = join(this.dir, "relays");
    mkdirSync(relayDir, { recursive: true });
    const socket = join(relayDir, `${port}.sock`);
    this.relays.push(this.launch(`relay ${port} (inside)`, "socat", [`UNIX-LISTEN:${socket},fork,unlink-early`, `TCP:127.0.0.1:${port}`],
      join(relayDir, `${port}-inside.log`)));
    const outside = launchHere(`relay ${port}`, "socat", [`TCP-LISTEN:${port},bind=127.0.0.1,reuseaddr,fork`, `UNIX-CONNECT:${socket}`],
      join(relayDir, `${port}-outside.log`));
    this.relays.push(outside);
    await outside.waitUntil(`127.0.0.1:${port} to listen`, () => accepts(port), 10_000);
  }

  /**
   * The reverse of `expose`: the machine's 127.0.0.1:`port` (a backend server on loopback) becomes
   * reachable inside at the node address, `address`:`port`, from the node and from its pods.
   */
  async reach(port: number): Promise<string> {
    const relayDir = join(this.dir, "relays");
    mkdirSync(relayDir, { recursive: true });
    const socket = join(relayDir, `reach-${port}.sock`);
    const outside = launchHere(`relay to ${port}`, "socat", [`UNIX-LISTEN:${socket},fork,unlink-early`, `TCP:127.0.0.1:${port}`],
      join(relayDir, `reach-${port}-outside.log`));
    this.relays.push(outside);
    await outside.waitUntil(`${socket} to exist`, async () => existsSync(socket), 10_000);
    this.relays.push(this.launch(`relay to ${port} (inside)`, "socat",
      [`TCP-LISTEN:${port},bind=${this.address},reuseaddr,fork`, `UNIX-CONNECT:${socket}`], join(relayDir, `reach-${port}-inside.log`)));
    return `${this.address}:${port}`;
  }

  /** Stops the relays and deletes the namespace (its links, routes and iptables rules go with it). */
  async destroy(): Promise<void> {
    for (const relay of this.relays.splice(0).reverse()) await relay.stop();
    await runCommand("ip", ["netns", "delete", this.name]).catch(() => undefined);
  }
}

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, "127.0.0.1", () => {
      socket.destroy();
      resolve(true);
    });
    socket.on("error", () => resolve(false));
  });
}
