/**
 * Loopback relays in front of the ZooKeeper servers. The native client's close() sends closeSession
 * over a live connection, which deletes every ephemeral node (every hold) at once; holds must instead
 * outlive an operator restart. With the client connected through these relays, the backend cuts the
 * connection first, so close() finds nothing to send and the session lives on until its timeout (or
 * until a restarted operator resumes it). A replica that lost leadership must not reconnect a session it
 * handed over, so new connections pass `admit` first.
 */
import { connect as dial, createServer, type AddressInfo, type Server, type Socket } from "node:net";

export class LoopbackRelay {
  private readonly sockets = new Set<Socket>();
  private cutOff = false;

  private readonly servers: Server[] = [];
  /** The client's address list: one relay per server, in the same order. */
  connect = "";
  /** Whether a new connection may be relayed now (refused ones are closed at once, as a server that is down). */
  admit: () => boolean = () => true;

  private constructor() {}

  /** One relay on 127.0.0.1 per `host:port` of `connect`. */
  static async start(connect: string): Promise<LoopbackRelay> {
    const relay = new LoopbackRelay();
    const addresses: string[] = [];
    for (const hostPort of connect.split(",")) {
      const at = hostPort.lastIndexOf(":");
      const upstream = { host: hostPort.slice(0, at), port: Number(hostPort.slice(at + 1)) };
      const server = createServer((client) => relay.pipe(client, upstream));
      await new Promise<void>((listening) => server.listen(0, "127.0.0.1", listening));
      relay.servers.push(server);
      addresses.push(`127.0.0.1:${(server.address() as AddressInfo).port}`);
    }
    relay.connect = addresses.join(",");
    return relay;
  }

  private pipe(client: Socket, upstream: { host: string; port: number }): void {
    if (this.cutOff || !this.admit()) return void client.destroy();
    const server = dial(upstream.port, upstream.host);
    for (const socket of [client, server]) {
      this.sockets.add(socket);
      socket.setNoDelay(true);
      socket.on("error", () => undefined);
      socket.on("close", () => {
        this.sockets.delete(socket);
        client.destroy();
        server.destroy();
      });
    }
    client.pipe(server);
    server.pipe(client);
  }

  /** Drops every connection and refuses new ones; the client sees its connection lost. */
  cut(): void {
    this.cutOff = true;
    for (const socket of this.sockets) socket.destroy();
    for (const server of this.servers) server.close();
  }
}
