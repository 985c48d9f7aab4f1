/**
 * A checking TCP relay between the proxy and its upstream, on loopback: bytes pass through unchanged both ways,
 * and everything the proxy sends is parsed on the way. For IMAP with the project's own command parser
 * (src/imap/wire: the framer in server role, then parseCommand, whose grammar is an allowlist), plus an explicit
 * list of the command names the proxy may send; for SMTP line by line against the verbs the proxy may send, with
 * command lines at most 1000 octets (RFC 5321 §4.5.3.1.6) and the message between DATA and the final dot checked
 * for bare CR or LF (§2.3.8). Anything that does not parse, or is not on the list, is counted as malformed with a
 * sample.
 *
 * With `hideQresync`, the IMAP server's answers pass with QRESYNC (RFC 7162) taken out of every capability list, so
 * that the proxy sees a server that owes no `[CLOSED]` and switches folders with UNSELECT and the SELECT pipelined
 * behind it (docs/imap.md "Switching folders"); everything else passes unchanged.
 */

import { createServer, type Server, type Socket, connect as tcpConnect } from "node:net";
import { Framer, isIdleDone, parseAuthenticateLine, parseCommand } from "../../src/imap/wire/index.ts";
import { LOOPBACK } from "./lib.ts";

/** Commands the IMAP proxy sends upstream (src/imap/upstream.ts and the command modules that use it). */
export const IMAP_UPSTREAM_COMMANDS: ReadonlySet<string> = new Set([
  "CAPABILITY",
  "NOOP",
  "LOGOUT",
  "STARTTLS",
  "IDLE",
  "UNSELECT",
  "CHECK",
  "NAMESPACE",
  "CLOSE",
  "EXPUNGE",
  "ID",
  "ENABLE",
  "LOGIN",
  "AUTHENTICATE",
  "LIST",
  "LSUB",
  "SELECT",
  "EXAMINE",
  "CREATE",
  "DELETE",
  "SUBSCRIBE",
  "UNSUBSCRIBE",
  "STATUS",
  "RENAME",
  "FETCH",
  "STORE",
  "COPY",
  "MOVE",
  "SEARCH",
  "SORT",
  "APPEND",
]);

/** SMTP commands the proxy sends upstream (src/smtp/upstream.ts), each with the shape of its whole line. */
const SMTP_UPSTREAM_LINES: readonly RegExp[] = [
  /^EHLO [\x21-\x7e]{1,255}$/,
  /^HELO [\x21-\x7e]{1,255}$/,
  /^AUTH (PLAIN|LOGIN)( [A-Za-z0-9+/=]+)?$/,
  /^MAIL FROM:<[^<>\s]*>( [A-Z0-9-]+(=[\x21-\x3c\x3e-\x7e]+)?)*$/,
  /^RCPT TO:<[^<>\s]+>( [A-Z0-9-]+(=[\x21-\x3c\x3e-\x7e]+)?)*$/,
  /^DATA$/,
  /^RSET$/,
  /^NOOP$/,
  /^QUIT$/,
  /^STARTTLS$/,
];

/** RFC 5321 §4.5.3.1.6: a text line is at most 1000 octets with its CRLF. */
const SMTP_MAX_LINE = 1000;
const SAMPLES_KEPT = 10;

export interface RelayStats {
  connections: number;
  commands: number;
  malformed: number;
  /** Capability lists from the server that QRESYNC was taken out of (`hideQresync`). */
  qresyncHidden: number;
  readonly samples: string[];
  readonly names: Map<string, number>;
}

export interface Relay {
  readonly port: number;
  readonly stats: RelayStats;
  /** Connections open through the relay now. */
  readonly open: number;
  close(): Promise<void>;
}

export interface RelayOptions {
  /** IMAP: take QRESYNC out of the server's capability lists (`withoutQresync`). */
  readonly hideQresync?: boolean;
}

export async function startRelay(
  protocol: "imap" | "smtp",
  upstreamPort: number,
  options: RelayOptions = {},
): Promise<Relay> {
  const stats: RelayStats = {
    connections: 0,
    commands: 0,
    malformed: 0,
    qresyncHidden: 0,
    samples: [],
    names: new Map(),
  };
  const sockets = new Set<Socket>();
  const bad = (what: string, bytes: Uint8Array | string): void => {
    stats.malformed++;
    if (stats.samples.length < SAMPLES_KEPT) {
      const text = typeof bytes === "string" ? bytes : Buffer.from(bytes).toString("latin1");
      stats.samples.push(`${what}: ${JSON.stringify(text.slice(0, 200))}`);
    }
  };
  const count = (name: string): void => {
    stats.commands++;
    stats.names.set(name, (stats.names.get(name) ?? 0) + 1);
  };
  const server: Server = createServer((down) => {
    stats.connections++;
    const up = tcpConnect({ host: LOOPBACK, port: upstreamPort });
    sockets.add(down);
    sockets.add(up);
    const check = protocol === "imap" ? imapChecker(count, bad) : smtpChecker(count, bad);
    const answers =
      protocol === "imap" && options.hideQresync === true
        ? withoutQresync(() => stats.qresyncHidden++)
        : (chunk: Uint8Array) => chunk;
    down.on("data", (chunk: Buffer) => {
      check(chunk);
      up.write(chunk);
    });
    up.on("data", (chunk: Buffer) => {
      const out = answers(chunk);
      if (out.length > 0) down.write(out);
    });
    const end = () => {
      down.destroy();
      up.destroy();
    };
    down.on("close", () => {
      sockets.delete(down);
      up.end();
      setTimeout(end, 1000).unref();
    });
    up.on("close", () => {
      sockets.delete(up);
      down.end();
      setTimeout(end, 1000).unref();
    });
    down.on("error", end);
    up.on("error", end);
  });
  await new Promise<void>((resolve) => server.listen(0, LOOPBACK, resolve));
  const address = server.address();
  const port = typeof address === "object" && address !== null ? address.port : 0;
  return {
    port,
    stats,
    get open() {
      return [...sockets].filter((s) => s.remotePort !== upstreamPort).length;
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

type Bad = (what: string, bytes: Uint8Array | string) => void;

/** A capability list: a CAPABILITY response, or the `[CAPABILITY …]` code of a greeting or tagged OK (RFC 9051 §7). */
const CAPABILITY_LINE = /^\S+ (CAPABILITY |(OK|PREAUTH) \[CAPABILITY )/i;
const QRESYNC = / QRESYNC(?=[ \]\r])/gi;

/**
 * The IMAP server's output with QRESYNC taken out of every capability list. Lines pass once their LF has come; the
 * octets of a literal (a line ending in `{n}` announces n of them, RFC 9051 §4.3) pass as they are, so that a
 * message's text is never rewritten.
 */
export function withoutQresync(onHidden: () => void): (chunk: Uint8Array) => Uint8Array {
  let pending: Buffer = Buffer.alloc(0);
  let literal = 0;
  return (chunk) => {
    const buffer = pending.length === 0 ? Buffer.from(chunk) : Buffer.concat([pending, chunk]);
    const out: Buffer[] = [];
    let at = 0;
    while (at < buffer.length) {
      if (literal > 0) {
        const n = Math.min(literal, buffer.length - at);
        out.push(buffer.subarray(at, at + n));
        at += n;
        literal -= n;
        continue;
      }
      const lf = buffer.indexOf(10, at);
      if (lf === -1) break;
      const line = buffer.subarray(at, lf + 1);
      at = lf + 1;
      const text = line.toString("latin1");
      literal = Number(/\{(\d+)\}\r?\n$/.exec(text)?.[1] ?? 0);
      const hidden = CAPABILITY_LINE.test(text) ? text.replace(QRESYNC, "") : text;
      if (hidden !== text) onHidden();
      out.push(hidden === text ? line : Buffer.from(hidden, "latin1"));
    }
    pending = Buffer.from(buffer.subarray(at));
    return out.length === 1 ? out[0]! : Buffer.concat(out);
  };
}

/** Frames and parses the proxy's IMAP commands; IDLE's DONE and AUTHENTICATE's continuations are raw lines. */
function imapChecker(count: (name: string) => void, bad: Bad): (chunk: Uint8Array) => void {
  // Server role (it reads commands), with the client side's literal allowances: the proxy may send large
  // non-synchronizing literals (APPEND with LITERAL+) and literal8 (BINARY).
  const framer = new Framer({
    role: "server",
    allowLiteral8: true,
    limits: { maxBuffered: 256 * 1024 * 1024 },
  });
  let raw: "idle" | "authenticate" | null = null;
  let broken = false;
  return (chunk) => {
    if (broken) return;
    framer.feed(chunk);
    for (let event = framer.next(); event !== null; event = framer.next()) {
      switch (event.kind) {
        case "literal":
          framer.acceptLiteral();
          break;
        case "line":
          if (raw === "idle" && isIdleDone(event.line)) count("DONE");
          else if (raw === "authenticate" && parseAuthenticateLine(event.line).ok) count("AUTHENTICATE continuation");
          else bad("unexpected raw line", event.line);
          raw = null;
          break;
        case "error":
          bad(`framing error ${event.error.code}`, event.error.message);
          broken = true;
          return;
        case "frame": {
          const parsed = parseCommand(event.frame);
          const text = Buffer.concat(event.frame.lines.map((l) => Buffer.from(l))).toString("latin1");
          if (!parsed.ok) {
            bad(`unparsable (${parsed.error.message})`, text);
            break;
          }
          const name = parsed.value.name;
          if (!IMAP_UPSTREAM_COMMANDS.has(name)) {
            bad(`not on the allowlist: ${name}`, text);
            break;
          }
          count(name);
          if (name === "IDLE") {
            raw = "idle";
            framer.expectRawLine();
          } else if (name === "AUTHENTICATE" && parsed.value.name === "AUTHENTICATE" && !parsed.value.initialResponse) {
            raw = "authenticate";
            framer.expectRawLine();
          }
        }
      }
    }
  };
}

/** Splits the proxy's SMTP stream into lines; commands must match SMTP_UPSTREAM_LINES, message lines be clean. */
function smtpChecker(count: (name: string) => void, bad: Bad): (chunk: Uint8Array) => void {
  let pending = "";
  let inData = false;
  let authLogin = 0;
  return (chunk) => {
    pending += Buffer.from(chunk).toString("latin1");
    for (;;) {
      const lf = pending.indexOf("\n");
      if (lf === -1) {
        if (pending.length > SMTP_MAX_LINE) {
          // Inside a message a long line is content (forwarded as it came, below); outside it is a command.
          if (!inData) bad("command line longer than 1000 octets", pending);
          else if (/\r(?!\n|$)/.test(pending)) bad("bare CR", pending);
          pending = pending.endsWith("\r") ? "\r" : "";
        }
        return;
      }
      const full = pending.slice(0, lf + 1);
      pending = pending.slice(lf + 1);
      if (!full.endsWith("\r\n") || full.slice(0, -2).includes("\r")) {
        bad("bare CR or LF", full);
        continue;
      }
      const line = full.slice(0, -2);
      if (inData) {
        // Message lines are checked for bare CR and LF only: the proxy forwards a longer line as it came (it is
        // the message's content, and Postfix accepts it), so the 1000-octet rule is checked on commands.
        if (line === ".") {
          inData = false;
          count("end of data");
        }
        continue;
      }
      if (full.length > SMTP_MAX_LINE) {
        bad("command line longer than 1000 octets", full);
        continue;
      }
      if (authLogin > 0) {
        authLogin--;
        if (/^[A-Za-z0-9+/=]*$/.test(line)) count("AUTH continuation");
        else bad("AUTH continuation", line);
        continue;
      }
      if (!SMTP_UPSTREAM_LINES.some((re) => re.test(line))) {
        bad("not an allowed command", line);
        continue;
      }
      const verb = /^(MAIL FROM|RCPT TO|[A-Z]+)/.exec(line)![1]!;
      count(verb);
      if (verb === "DATA") inData = true;
      if (line === "AUTH LOGIN") authLogin = 2;
      else if (/^AUTH LOGIN \S+$/.test(line)) authLogin = 1;
    }
  };
}
