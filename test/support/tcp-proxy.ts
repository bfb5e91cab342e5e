/**
 * A loopback TCP proxy in front of a server, for outages and partitions as a client sees them:
 * - `stop()`: it refuses connections and cuts open ones (watches included), an outage; `start()` again
 *   brings it back on the same port;
 * - `partition()`: it stops relaying bytes in both directions while every connection stays open, and
 *   accepts new ones that get no answer either: a network partition or a half-open connection, where
 *   nothing fails fast and only timeouts notice; `heal()` relays again, the held-back bytes included (TCP
 *   delays, it does not drop).
 */
import { connect, createServer, type Server, type Socket } from "node:net";

export class TcpProxy {
  private server?: Server;
  private readonly sockets = new Set<Socket>();
  private port = 0;
  private partitioned = false;

  constructor(private readonly host: string, private readonly targetPort: number) {}

  /** 127.0.0.1:PORT, once started. */
  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  get isPartitioned(): boolean {
    return this.partitioned;
  }

  async start(): Promise<void> {
    const server = createServer((client) => {
      const upstream = connect(this.targetPort, this.host);
      for (const socket of [client, upstream]) {
        this.sockets.add(socket);
        socket.on("close", () => this.sockets.delete(socket));
        socket.on("error", () => {
          client.destroy();
          upstream.destroy();
        });
        if (this.partitioned) socket.pause();
      }
      this.relay(client, upstream);
      this.relay(upstream, client);
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
    for (const socket of this.sockets) socket.pause();
  }

  heal(): void {
    this.partitioned = false;
    for (const socket of this.sockets) socket.resume();
  }

  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    this.partitioned = false;
    for (const socket of this.sockets) socket.destroy();
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  /** Forwards `from` to `to` with backpressure; a partition pauses `from`, and a drain never resumes it meanwhile. */
  private relay(from: Socket, to: Socket): void {
    from.on("data", (chunk) => {
      if (to.write(chunk)) return;
      from.pause();
      to.once("drain", () => this.partitioned || from.resume());
    });
    from.on("end", () => to.end());
  }
}
