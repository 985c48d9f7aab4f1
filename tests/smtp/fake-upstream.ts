/**
 * An in-process SMTP server that plays the upstream when the real Postfix cannot: a man in the middle that
 * strips STARTTLS, a server that fails in chosen ways, or a sink for very large messages. It records every
 * line it receives (outside DATA) so tests can assert what the proxy sent.
 */

import { readFileSync } from "node:fs";
import { type AddressInfo, createServer, type Server, type Socket } from "node:net";
import { TLSSocket } from "node:tls";
import { upstreams } from "./helpers.ts";

export interface FakeUpstreamOptions {
  /** EHLO keywords after the greeting line; default PIPELINING, SIZE, 8BITMIME, AUTH PLAIN LOGIN. */
  readonly extensions?: readonly string[];
  /** Offer and perform STARTTLS with the test CA's server certificate. */
  readonly starttls?: boolean;
  /** Reply to the final dot; default 250. */
  readonly dataReply?: string;
  /** Keep DATA content (off for huge messages: only the size is counted). */
  readonly keepData?: boolean;
  /**
   * Called the moment the end of data (CRLF.CRLF) arrives, before the server replies: what a test checks here
   * held when the message was delivered. Gets the content when keepData.
   */
  readonly onEndOfData?: (content: Buffer | null) => void;
  /** Written right after the 235 of the first connection's AUTH, in the same write: a reply nothing asked for. */
  readonly unaskedAfterAuth?: string;
  /**
   * Written when the first connection's first DATA content arrives, before its end of data: an early reply. The
   * connection then stops reading, as a server that has given up on the message would.
   */
  readonly replyInData?: string;
  /** The first connection stops reading when its first DATA content arrives, and says nothing. */
  readonly stallInData?: boolean;
  /** Written in clear right after STARTTLS's 220, in the same write: what a man in the middle would inject. */
  readonly injectAfterStartTls?: string;
  /** The first connection takes its first message (it is kept and counted) and closes without answering its dot. */
  readonly dropAtEndOfData?: boolean;
}

export interface FakeUpstream {
  readonly port: number;
  /** Every command line received, in order, across connections (credentials included: tests check them). */
  readonly lines: string[];
  /** Content of each DATA (dot-stuffed as received, without the final dot line), when keepData. */
  readonly messages: Buffer[];
  /** Sizes of each DATA as received. */
  readonly sizes: number[];
  /** DATA octets received so far, across connections, including a message whose end has not come. */
  readonly dataOctets: number;
  /** Connections that closed in the middle of DATA: transactions abandoned without their end of data. */
  readonly abandoned: number;
  connections: number;
  close(): Promise<void>;
}

export async function startFakeUpstream(options: FakeUpstreamOptions = {}): Promise<FakeUpstream> {
  const extensions = options.extensions ?? ["PIPELINING", "SIZE 104857600", "8BITMIME", "AUTH PLAIN LOGIN"];
  const lines: string[] = [];
  const messages: Buffer[] = [];
  const sizes: number[] = [];
  const sockets = new Set<Socket>();
  const state = { connections: 0, dataOctets: 0, abandoned: 0 };
  const server: Server = createServer((raw) => {
    state.connections++;
    const first = state.connections === 1;
    let earlyReplied = false;
    sockets.add(raw);
    let inData = false;
    raw.on("close", () => {
      sockets.delete(raw);
      if (inData) state.abandoned++;
    });
    raw.on("error", () => {});
    let socket: Socket = raw;
    let buffer = Buffer.alloc(0);
    let dataParts: Buffer[] = [];
    let dataSize = 0;
    let tail = Buffer.alloc(0);
    const write = (s: string) => socket.write(s);
    const onData = (chunk: Buffer) => {
      if (inData && first && (options.replyInData !== undefined || options.stallInData) && !earlyReplied) {
        earlyReplied = true;
        if (options.replyInData !== undefined) write(`${options.replyInData}\r\n`);
        socket.pause();
        return;
      }
      if (inData) {
        // Look for CRLF.CRLF across chunk edges using the last 4 bytes of what came before.
        const joined = Buffer.concat([tail, chunk]);
        const end = joined.indexOf("\r\n.\r\n");
        if (end === -1) {
          dataSize += chunk.length;
          state.dataOctets += chunk.length;
          if (options.keepData) dataParts.push(chunk);
          tail = joined.subarray(Math.max(0, joined.length - 4));
          return;
        }
        const usedFromChunk = end + 5 - tail.length;
        const contentInChunk = end + 2 - tail.length;
        if (contentInChunk > 0) {
          dataSize += contentInChunk;
          state.dataOctets += contentInChunk;
          if (options.keepData) dataParts.push(chunk.subarray(0, contentInChunk));
        }
        inData = false;
        sizes.push(dataSize);
        const content = options.keepData ? Buffer.concat(dataParts) : null;
        if (content !== null) messages.push(content);
        options.onEndOfData?.(content);
        dataParts = [];
        dataSize = 0;
        tail = Buffer.alloc(0);
        if (first && options.dropAtEndOfData) {
          socket.destroy();
          return;
        }
        write(`${options.dataReply ?? "250 2.0.0 Ok: queued as FAKE"}\r\n`);
        chunk = chunk.subarray(usedFromChunk);
        if (chunk.length === 0) return;
      }
      buffer = Buffer.concat([buffer, chunk]);
      for (;;) {
        const lf = buffer.indexOf("\r\n");
        if (lf === -1) return;
        const line = buffer.subarray(0, lf).toString("latin1");
        buffer = buffer.subarray(lf + 2);
        lines.push(line);
        const verb = line.split(" ")[0]!.toUpperCase();
        if (verb === "EHLO") {
          const offered = [...extensions];
          if (options.starttls && !(socket instanceof TLSSocket)) offered.push("STARTTLS");
          write(["fake.test", ...offered].map((e, i, a) => `250${i === a.length - 1 ? " " : "-"}${e}\r\n`).join(""));
        } else if (verb === "STARTTLS" && options.starttls) {
          write(`220 2.0.0 go ahead\r\n${options.injectAfterStartTls ?? ""}`);
          raw.off("data", onData);
          const up = upstreams();
          const tlsDir = up.caFile.replace(/ca\.pem$/, "");
          const secure = new TLSSocket(raw, {
            isServer: true,
            key: readFileSync(`${tlsDir}server.key`),
            cert: readFileSync(`${tlsDir}server.pem`),
          });
          secure.on("error", () => {});
          socket = secure;
          buffer = Buffer.alloc(0);
          secure.on("data", onData);
          return;
        } else if (verb === "AUTH") {
          const unasked = first && options.unaskedAfterAuth !== undefined ? `${options.unaskedAfterAuth}\r\n` : "";
          write(`235 2.7.0 ok\r\n${unasked}`);
        } else if (verb === "DATA") {
          write("354 go\r\n");
          inData = true;
          const rest = buffer;
          buffer = Buffer.alloc(0);
          if (rest.length > 0) onData(rest);
          return;
        } else if (verb === "QUIT") {
          write("221 bye\r\n");
          socket.end();
          return;
        } else {
          write("250 2.0.0 ok\r\n");
        }
      }
    };
    raw.on("data", onData);
    write("220 fake.test ESMTP\r\n");
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as AddressInfo).port,
    lines,
    messages,
    sizes,
    get connections() {
      return state.connections;
    },
    get dataOctets() {
      return state.dataOctets;
    },
    get abandoned() {
      return state.abandoned;
    },
    set connections(n: number) {
      state.connections = n;
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
