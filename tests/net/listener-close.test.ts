/**
 * Listener.close(graceMs): a peer that never closes its side must not hold the shutdown forever; connections
 * still open after the grace time are destroyed (src/net/listener.ts, the `close` contract).
 */

import { expect, test } from "bun:test";
import { connect, type Socket } from "node:net";
import { listen } from "../../src/net/listener.ts";

test("close(graceMs) destroys a connection the peer keeps open", async () => {
  const listener = await listen({
    host: "127.0.0.1",
    port: 0,
    tls: "none",
    identity: null,
    maxConnections: 4,
    // The session says goodbye but the peer never closes its side.
    onConnection: (c) => c.write("* OK welcome\r\n"),
    onOverload: (c) => c.end(),
  });
  const peer: Socket = connect(listener.address.port, "127.0.0.1");
  peer.on("error", () => {});
  peer.allowHalfOpen = true;
  await new Promise((resolve) => peer.once("data", resolve));
  const at = performance.now();
  const outcome = await Promise.race([listener.close(100).then(() => "closed"), Bun.sleep(3000).then(() => "hung")]);
  peer.destroy();
  expect(outcome).toBe("closed");
  expect(performance.now() - at).toBeLessThan(2000);
});
