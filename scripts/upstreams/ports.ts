/** Loopback ports: finding free ones and waiting for a listener. */
import { connect, createServer } from "node:net";

/** Asks the kernel for a free port on 127.0.0.1 (bind to port 0, read it back, release it). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on("error", reject);
    server.listen({ host: "127.0.0.1", port: 0, exclusive: true }, () => {
      const address = server.address();
      const port = typeof address === "object" && address !== null ? address.port : 0;
      server.close(() => (port > 0 ? resolve(port) : reject(new Error("upstreams: no free port"))));
    });
  });
}

/** Distinct free ports, one per name. */
export async function freePorts(count: number): Promise<number[]> {
  const ports = new Set<number>();
  while (ports.size < count) ports.add(await freePort());
  return [...ports];
}

/** True when something accepts TCP connections on 127.0.0.1:port. */
export function isListening(port: number, timeoutMs = 500): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: "127.0.0.1", port });
    const done = (up: boolean) => {
      socket.destroy();
      resolve(up);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once("connect", () => done(true));
    socket.once("error", () => done(false));
  });
}

/** Waits until every port accepts connections, or throws naming the ones that do not. */
export async function waitForPorts(ports: Record<string, number>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let pending = Object.entries(ports);
  while (pending.length > 0) {
    const states = await Promise.all(
      pending.map(async ([name, port]) => [name, port, await isListening(port)] as const),
    );
    pending = states.filter(([, , up]) => !up).map(([name, port]) => [name, port]);
    if (pending.length === 0) return;
    if (Date.now() > deadline) {
      throw new Error(
        `upstreams: nothing listens on ` +
          `${pending.map(([name, port]) => `${name} 127.0.0.1:${port}`).join(", ")} after ${timeoutMs} ms`,
      );
    }
    await Bun.sleep(50);
  }
}
