/**
 * Microbenchmark: framer + FETCH response parser throughput on a stream of
 * `* n FETCH (UID n FLAGS (\Seen) BODY[] {4096} ...)` responses, fed in 64 KiB chunks
 * (the size a socket read typically delivers). Also reports re-encoding to the agent.
 *
 *   bun scripts/bench/imap-wire.ts [total MiB, default 256]
 */
import { Encoder, Framer, parseResponse, writeResponse } from "../../src/imap/wire/index.ts";
import { benchOptions } from "./args.ts";

const TOTAL_MIB = benchOptions(process.argv.slice(2), "bun scripts/bench/imap-wire.ts [total MiB]", {
  positional: "total MiB",
}).positional(256);
const BODY_SIZE = 4096;
const CHUNK = 64 * 1024;

function buildStream(): { data: Uint8Array; messages: number } {
  const body = new Uint8Array(BODY_SIZE);
  const line = new TextEncoder().encode("From: a@example.org\r\nSubject: benchmark message body line\r\n");
  for (let i = 0; i < BODY_SIZE; i++) body[i] = line[i % line.length]!;
  const parts: Uint8Array[] = [];
  let size = 0;
  let n = 0;
  // 16 MiB of distinct responses, repeated to reach the total (keeps memory modest).
  while (size < 16 * 1024 * 1024) {
    n++;
    const head = new TextEncoder().encode(`* ${n} FETCH (UID ${n + 1000} FLAGS (\\Seen) BODY[] {${BODY_SIZE}}\r\n`);
    const tail = new TextEncoder().encode(")\r\n");
    parts.push(head, body, tail);
    size += head.length + body.length + tail.length;
  }
  const data = new Uint8Array(size);
  let o = 0;
  for (const p of parts) {
    data.set(p, o);
    o += p.length;
  }
  return { data, messages: n };
}

const { data, messages } = buildStream();
const rounds = Math.max(1, Math.round((TOTAL_MIB * 1024 * 1024) / data.length));

function run(encode: boolean): { mbps: number; msgs: number } {
  const framer = new Framer({ role: "client" });
  // One encoder per connection, as a session would keep it.
  const enc = new Encoder({ side: "server" });
  let parsed = 0;
  let bodyBytes = 0;
  const start = performance.now();
  for (let r = 0; r < rounds; r++) {
    for (let off = 0; off < data.length; off += CHUNK) {
      framer.feed(data.subarray(off, off + CHUNK));
      for (let e = framer.next(); e !== null; e = framer.next()) {
        if (e.kind !== "frame") throw new Error(`unexpected ${e.kind}`);
        const res = parseResponse(e.frame);
        if (!res.ok || res.value.type !== "FETCH") throw new Error("parse failed");
        const b = res.value.attrs[2];
        if (b?.name === "BODY[]" && b.data !== null) bodyBytes += b.data.length;
        if (encode) writeResponse(enc, res.value);
        parsed++;
      }
      // One batch per chunk, as the session writes it: views of the encoder's buffer, then reused.
      if (encode) {
        enc.takeViews();
        enc.recycle();
      }
    }
  }
  const secs = (performance.now() - start) / 1000;
  if (parsed !== messages * rounds || bodyBytes !== parsed * BODY_SIZE) throw new Error("lost messages");
  return { mbps: (data.length * rounds) / secs / (1024 * 1024), msgs: parsed / secs };
}

run(false); // warm up
const parseOnly = run(false);
const withEncode = run(true);
console.log(
  `imap-wire: ${((data.length * rounds) / 1048576).toFixed(0)} MiB of FETCH BODY[] responses ` +
    `(${BODY_SIZE}-octet bodies, ${CHUNK / 1024} KiB chunks)`,
);
console.log(
  `  framer + parseResponse:           ${parseOnly.mbps.toFixed(0)} MiB/s, ` +
    `${(parseOnly.msgs / 1000).toFixed(0)}k responses/s`,
);
console.log(
  `  framer + parseResponse + encode:  ${withEncode.mbps.toFixed(0)} MiB/s, ` +
    `${(withEncode.msgs / 1000).toFixed(0)}k responses/s`,
);
