/**
 * A loopback TCP proxy in front of a server: clients that connect through it lose the server when it
 * stops (it refuses connections and cuts open ones, watches included), which is a partition or an
 * outage as the client sees it; `start()` again brings it back on the same port.
 *
 * `blackhole()` is the nastier fault: a half-open path. Every connection stays open but no byte goes
 * through any more, in either direction, and new connections are accepted into the same silence, so a
 * client sees neither an error nor an answer. `restore()` relays new connections again; the silenced
 * ones stay silent (as after a NAT or firewall lost their state) until `stop()`.
 */
import { connect, createServer, type Server, type Socket } from "node:net";

interface Relay {
  client: Socket;
  upstream?: Socket;
}

export class TcpProxy {
  private server?: Server;
  private readonly relays = new Set<Relay>();
  private port = 0;
  private silent = false;

  constructor(private readonly host: string, private readonly targetPort: number) {}

  /** 127.0.0.1:PORT, once started. */
  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    this.silent = false;
    const server = createServer((client) => {
      const relay: Relay = { client };
      this.relays.add(relay);
      client.on("close", () => {
        this.relays.delete(relay);
        relay.upstream?.destroy();
      });
      client.on("error", () => destroy(relay));
      if (this.silent) return silence(relay);
      const upstream = connect(this.targetPort, this.host);
      relay.upstream = upstream;
      upstream.on("error", () => destroy(relay));
      client.pipe(upstream).pipe(client);
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(this.port, "127.0.0.1", () => resolve());
    });
    this.port = (server.address() as { port: number }).port;
    this.server = server;
  }

  /** Stops relaying on every connection, open and new, while keeping them all open. */
  blackhole(): void {
    this.silent = true;
    for (const relay of this.relays) silence(relay);
  }

  /** New connections are relayed again; those silenced by blackhole() stay silent. */
  restore(): void {
    this.silent = false;
  }

  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    for (const relay of this.relays) destroy(relay);
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

/** Unpipes both directions and reads on, dropping every byte: the peers see an open, mute connection. */
function silence({ client, upstream }: Relay): void {
  client.unpipe();
  upstream?.unpipe();
  for (const socket of [client, upstream]) {
    socket?.removeAllListeners("data");
    socket?.on("data", () => undefined);
    socket?.resume();
  }
}

function destroy({ client, upstream }: Relay): void {
  client.destroy();
  upstream?.destroy();
}
