/** Loopback ports: finding free ones and waiting for a listener. */
import { readFileSync } from "node:fs";
import { connect, createServer } from "node:net";

/**
 * Ports handed out for a listener that binds later (a server started with a config, an address where nothing may
 * listen) come from below the kernel's ephemeral range: a port the kernel picked for `port 0` lies inside that range,
 * where any outgoing connection made meanwhile (the servers' own, the proxy's) can take it as its local port and
 * make the later bind fail. Below the range only another listener can hold a port, and that is checked.
 */
const LOW_PORTS = { from: 10_000, attempts: 50 } as const;

/** Ports this process has handed out: never twice, as the first may not be bound yet when the second is asked for. */
const handedOut = new Set<number>();

/** The first port of the kernel's ephemeral range (Linux), or null where it cannot be read. */
function ephemeralStart(): number | null {
  try {
    const first = Number.parseInt(readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim(), 10);
    return Number.isInteger(first) && first > LOW_PORTS.from + 1000 ? first : null;
  } catch {
    return null;
  }
}

/** Listens on 127.0.0.1:`port` (0: the kernel chooses), releases it and says which port that was; null if taken. */
function tryPort(port: number): Promise<number | null> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on("error", (e: NodeJS.ErrnoException) => (e.code === "EADDRINUSE" ? resolve(null) : reject(e)));
    server.listen({ host: "127.0.0.1", port, exclusive: true }, () => {
      const address = server.address();
      const got = typeof address === "object" && address !== null ? address.port : 0;
      server.close(() => (got > 0 ? resolve(got) : reject(new Error("upstreams: no free port"))));
    });
  });
}

/**
 * A free port on 127.0.0.1 not handed out before in this process: a random one below the ephemeral range that
 * nothing listens on (see LOW_PORTS), or, where that range is unknown or those tries were all taken, one the kernel
 * picks.
 */
export async function freePort(): Promise<number> {
  const end = ephemeralStart();
  for (let i = 0; i < 2 * LOW_PORTS.attempts; i++) {
    const pick =
      end !== null && i < LOW_PORTS.attempts ? LOW_PORTS.from + Math.floor(Math.random() * (end - LOW_PORTS.from)) : 0;
    if (handedOut.has(pick)) continue;
    const port = await tryPort(pick);
    if (port === null || handedOut.has(port)) continue;
    handedOut.add(port);
    return port;
  }
  throw new Error("upstreams: no free port");
}

/** Free ports, one per name (distinct, as freePort never hands one out twice). */
export async function freePorts(count: number): Promise<number[]> {
  const ports: number[] = [];
  for (let i = 0; i < count; i++) ports.push(await freePort());
  return ports;
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
