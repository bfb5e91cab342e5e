/**
 * A loopback TCP proxy in front of a server, for outages and partitions as a client sees them:
 * - `stop()`: it refuses connections and cuts open ones (watches included), an outage; `start()` again
 *   brings it back on the same port;
 * - `partition()`: it stops relaying bytes in both directions while every connection stays open, and
 *   accepts new ones that get no answer either: a network partition, where nothing fails fast and only
 *   timeouts notice; `heal()` relays again, the held-back bytes included (TCP delays, it does not drop);
 * - `blackhole()`: the nastier half-open path. Every open connection goes mute for good (bytes are read and
 *   dropped, as after a NAT or firewall lost the connection's state) and new ones are accepted into the
 *   same silence; `restore()` relays new connections again, the muted ones stay mute until `stop()`.
 */
import { connect, createServer, type Server, type Socket } from "node:net";

interface Relay {
  client: Socket;
  upstream: Socket;
  muted: boolean;
}

export class TcpProxy {
  private server?: Server;
  private readonly relays = new Set<Relay>();
  /** Every accepted connection still open: server.close() waits for them all, so stop() cuts each. */
  private readonly accepted = new Set<Socket>();
  private port = 0;
  private partitioned = false;
  private silent = false;

  constructor(private readonly host: string, private readonly targetPort: number) {}

  /** 127.0.0.1:PORT, once started. */
  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  get isPartitioned(): boolean {
    return this.partitioned;
  }

  async start(): Promise<void> {
    this.silent = false;
    const server = createServer((client) => {
      this.accepted.add(client);
      client.on("close", () => this.accepted.delete(client));
      const relay: Relay = { client, upstream: connect(this.targetPort, this.host), muted: this.silent };
      this.relays.add(relay);
      for (const socket of [client, relay.upstream]) {
        // Forgotten only once both ends closed: a muted client whose upstream went stays open, and stop() must cut it
        // (server.close() waits for every accepted connection).
        socket.on("close", () => client.destroyed && relay.upstream.destroyed && this.relays.delete(relay));
        socket.on("error", () => destroy(relay));
        if (this.partitioned) socket.pause();
      }
      this.forward(relay, client, relay.upstream);
      this.forward(relay, relay.upstream, client);
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(this.port, "127.0.0.1", () => resolve());
    });
    this.port = (server.address() as { port: number }).port;
    this.server = server;
  }

  /** Stops relaying: connections stay open, bytes wait (see the class comment). */
  partition(): void {
    this.partitioned = true;
    for (const { client, upstream } of this.relays) for (const socket of [client, upstream]) socket.pause();
  }

  heal(): void {
    this.partitioned = false;
    for (const { client, upstream } of this.relays) for (const socket of [client, upstream]) socket.resume();
  }

  /** Mutes every connection, open and new, for good, while keeping them all open. */
  blackhole(): void {
    this.silent = true;
    for (const relay of this.relays) relay.muted = true;
  }

  /** New connections are relayed again; those muted by blackhole() stay mute. */
  restore(): void {
    this.silent = false;
  }

  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    this.partitioned = false;
    for (const relay of this.relays) destroy(relay);
    for (const client of this.accepted) client.destroy();
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  /** Forwards `from` to `to` with backpressure; a partition pauses `from`, and a drain never resumes it meanwhile. */
  private forward(relay: Relay, from: Socket, to: Socket): void {
    from.on("data", (chunk) => {
      if (relay.muted || to.write(chunk)) return;
      from.pause();
      to.once("drain", () => this.partitioned || from.resume());
    });
    from.on("end", () => relay.muted || to.end());
  }
}

function destroy({ client, upstream }: Relay): void {
  client.destroy();
  upstream.destroy();
}
