/**
 * Fuzz: random and mutated commands and responses, fed in random chunk sizes to the
 * framer and both parsers. Properties: no exception escapes (only typed errors come
 * back as values), whatever parses re-encodes and parses again, and the heap stays
 * bounded. Seeded, so a failure reproduces; FUZZ_SEED and FUZZ_ITERATIONS override.
 */
import { expect, test } from "bun:test";
import {
  Encoder,
  type Frame,
  Framer,
  type FramerLimits,
  parseAuthenticateLine,
  parseCommand,
  parseResponse,
  writeCommand,
  writeResponse,
} from "../../../src/imap/wire/index.ts";

const ITERATIONS = Number(process.env["FUZZ_ITERATIONS"] ?? 100_000);
const SEED = Number(process.env["FUZZ_SEED"] ?? 0x5eed1234);

/** mulberry32: small, fast, good enough for fuzzing. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const COMMANDS = [
  "a NOOP\r\n",
  "a1 CAPABILITY\r\n",
  "a LOGIN {3}\r\nbob {4+}\r\npass\r\n",
  'a LOGIN "bob" "p\\"w"\r\n',
  "a AUTHENTICATE PLAIN AGJvYgBwdw==\r\n",
  'a ID ("name" "x" "version" NIL)\r\n',
  "a ENABLE UTF8=ACCEPT\r\n",
  'a LIST (SUBSCRIBED) "" "Caf&AOk-/%" RETURN (CHILDREN)\r\n',
  'a SELECT "&AEk-NBOX"\r\n',
  "a EXAMINE INBOX\r\n",
  "a STATUS INBOX (MESSAGES UNSEEN UIDNEXT)\r\n",
  'a RENAME a "b c"\r\n',
  "a UID FETCH 1:*,5,7:9 (FLAGS BODY.PEEK[1.2.HEADER.FIELDS (From To)]<0.100> UID BINARY[1] RFC822.SIZE)\r\n",
  "a FETCH 1 FULL\r\n",
  "a UID SEARCH RETURN (MIN MAX COUNT) CHARSET UTF-8 OR FROM {5}\r\ncaf\xc3\xa9 NOT (SEEN UID 1:5) SINCE " +
    '1-Feb-2024 HEADER X-A "b"\r\n',
  "a SORT (REVERSE DATE) UTF-8 ALL\r\n",
  "a UID STORE 1:3 +FLAGS.SILENT (\\Seen $Label)\r\n",
  "a UID MOVE 1:* Archive\r\n",
  "a UID EXPUNGE 1:3\r\n",
  'a APPEND Drafts (\\Draft) " 4-Jul-2024 10:00:00 +0200" {12}\r\nFrom: x\r\n\r\nb\r\n',
  "a APPEND Drafts {5+}\r\nhello\r\n",
  "a IDLE\r\nDONE\r\n",
];

const RESPONSES = [
  "* OK [CAPABILITY IMAP4rev1 LITERAL+ IDLE] Dovecot ready.\r\n",
  "* 3 FETCH (FLAGS (\\Seen) BODY[] {20}\r\nFrom: a\r\n\r\nbody\r\n12 UID 42)\r\n",
  '* 1 FETCH (UID 1 ENVELOPE ("d" {3}\r\nsub (("A" NIL "a" "x")) NIL NIL NIL NIL NIL NIL "<i>") BODYSTRUCTURE ' +
    '("text" "plain" NIL NIL NIL "7bit" 1 1))\r\n',
  '* 1 FETCH (BODY[HEADER.FIELDS (FROM)]<0> "x" BINARY[1] ~{2}\r\n\x00\x01 INTERNALDATE " 4-Jul-2024 10:00:00 ' +
    '+0000")\r\n',
  "a1 OK [COPYUID 17 1:3 10:12] done\r\n",
  "* OK [PERMANENTFLAGS (\\Seen \\*)] ok\r\n",
  '* LIST (\\HasNoChildren) "/" "Caf&AOk-"\r\n',
  "* STATUS INBOX (MESSAGES 3 UIDNEXT 5)\r\n",
  '* ESEARCH (TAG "a1") UID MIN 1 MAX 9 COUNT 3 ALL 1,5:9\r\n',
  "* SEARCH 1 2 3\r\n",
  "* VANISHED (EARLIER) 1:5\r\n",
  '* NAMESPACE (("" "/")) NIL NIL\r\n',
  '* ID ("name" "Dovecot")\r\n',
  "+ Ready\r\n",
  "* 5 EXISTS\r\n* 2 EXPUNGE\r\n",
  "* OK [X-UNKNOWN a b] c\r\n",
];

const enc = new TextEncoder();
const toBytes = (s: string): Uint8Array => Uint8Array.from(s, (c) => c.charCodeAt(0) & 0xff);
const CMD_BYTES = COMMANDS.map(toBytes);
const RESP_BYTES = RESPONSES.map(toBytes);
void enc;

const MARKERS = [
  "{0}\r\n",
  "{5}\r\n",
  "{5+}\r\n",
  "~{4}\r\n",
  "{4294967296}\r\n",
  "{99999999999999999999}\r\n",
  "{100000}\r\n",
  "{4097+}\r\n",
  '"',
  "\\",
  "(",
  ")",
  "[",
  "]",
  "\r\n",
  "\n",
  "*",
  "%",
  "&",
  "\x00",
  " ",
];

function mutate(rand: () => number, input: Uint8Array, pool: Uint8Array[]): Uint8Array {
  let b = Array.from(input);
  const steps = 1 + Math.floor(rand() * 4);
  for (let s = 0; s < steps; s++) {
    const pos = Math.floor(rand() * (b.length + 1));
    switch (Math.floor(rand() * 7)) {
      case 0: // flip a byte
        if (b.length > 0) b[pos % b.length] = Math.floor(rand() * 256);
        break;
      case 1: // truncate
        b = b.slice(0, pos);
        break;
      case 2: {
        // splice a piece of another input
        const other = pool[Math.floor(rand() * pool.length)]!;
        const from = Math.floor(rand() * other.length);
        b.splice(pos, 0, ...other.subarray(from, from + Math.floor(rand() * 40)));
        break;
      }
      case 3: // insert a marker or special
        b.splice(pos, 0, ...toBytes(MARKERS[Math.floor(rand() * MARKERS.length)]!));
        break;
      case 4: // delete a range
        b.splice(pos, Math.floor(rand() * 8));
        break;
      case 5: // duplicate a range
        b.splice(pos, 0, ...b.slice(pos, pos + Math.floor(rand() * 30)));
        break;
      case 6: // random bytes
        for (let k = Math.floor(rand() * 8); k > 0; k--) b.splice(pos, 0, Math.floor(rand() * 256));
        break;
    }
  }
  return Uint8Array.from(b);
}

function randomBytes(rand: () => number): Uint8Array {
  const n = Math.floor(rand() * 200);
  const out = new Uint8Array(n);
  const alphabet = toBytes('a1 {}[]()<>"\\*%:,.+-~\r\n\r\nFETCH BODY UID NIL OK SEARCH 0123456789');
  for (let i = 0; i < n; i++)
    out[i] = rand() < 0.8 ? alphabet[Math.floor(rand() * alphabet.length)]! : Math.floor(rand() * 256);
  return out;
}

const SMALL_LIMITS: Partial<FramerLimits> = {
  maxLine: 64,
  maxLiteral: 100,
  maxArgumentLiteral: 50,
  maxNonSyncDrain: 400,
  maxLiterals: 3,
  maxFrameBytes: 300,
  maxBuffered: 500,
};

/** Parses, and if that succeeds, re-encodes and parses again: both must succeed. */
function exercise(frame: Frame, server: boolean): void {
  if (server) {
    const r = parseCommand(frame);
    if (r.ok) {
      const e = new Encoder({ side: "client" });
      writeCommand(e, r.value);
      const again = reframe(e.finishBytes(), "server");
      if (again !== null && !parseCommand(again).ok) throw new Error("re-encoded command does not parse");
    }
  } else {
    const r = parseResponse(frame);
    if (r.ok) {
      const v = r.value;
      const droppable =
        v.type === "unknown" ||
        (v.type === "status" && v.code !== null && !v.code.known) ||
        (v.type === "FETCH" && v.attrs.some((a) => a.name === "unknown")) ||
        ((v.type === "LIST" || v.type === "STATUS") && v.mailbox === null);
      if (!droppable) {
        const e = new Encoder({ side: "server" });
        writeResponse(e, v);
        const again = reframe(e.finishBytes(), "client");
        if (again !== null && !parseResponse(again).ok) throw new Error("re-encoded response does not parse");
      }
    }
  }
  const line = frame.lines[0];
  if (line !== undefined) parseAuthenticateLine(line);
}

function reframe(data: Uint8Array, role: "server" | "client"): Frame | null {
  const f = new Framer({ role, allowLiteral8: true });
  f.feed(data);
  for (let e = f.next(); e !== null; e = f.next()) {
    if (e.kind === "literal") f.acceptLiteral();
    else if (e.kind === "frame") return e.frame;
    else if (e.kind === "error") throw new Error(`re-encoded message does not frame: ${e.error.message}`);
  }
  throw new Error("re-encoded message is incomplete");
}

test(`fuzz: ${ITERATIONS} random and mutated inputs, random chunking`, () => {
  const rand = prng(SEED);
  const pool = [...CMD_BYTES, ...RESP_BYTES];
  Bun.gc(true);
  const baseline = process.memoryUsage().heapUsed;
  let peak = 0;
  let frames = 0;
  let errors = 0;
  for (let i = 0; i < ITERATIONS; i++) {
    const server = rand() < 0.5;
    const corpus = server ? CMD_BYTES : RESP_BYTES;
    let input: Uint8Array;
    const kind = rand();
    if (kind < 0.1) input = randomBytes(rand);
    else if (kind < 0.2) input = corpus[Math.floor(rand() * corpus.length)]!;
    else input = mutate(rand, corpus[Math.floor(rand() * corpus.length)]!, pool);
    // Several messages per stream, to exercise pipelining and resynchronisation.
    if (rand() < 0.3) {
      const extra = mutate(rand, corpus[Math.floor(rand() * corpus.length)]!, pool);
      const joined = new Uint8Array(input.length + extra.length);
      joined.set(input);
      joined.set(extra, input.length);
      input = joined;
    }
    const framer = new Framer({
      role: server ? "server" : "client",
      allowLiteral8: rand() < 0.2,
      ...(rand() < 0.3 ? { limits: SMALL_LIMITS } : {}),
    });
    try {
      let off = 0;
      while (off < input.length) {
        const size = 1 + Math.floor(rand() * (rand() < 0.5 ? 8 : 256));
        framer.feed(input.subarray(off, off + size));
        off += size;
        for (let e = framer.next(); e !== null; e = framer.next()) {
          if (e.kind === "literal") {
            if (rand() < 0.8) framer.acceptLiteral();
            else framer.refuseLiteral();
          } else if (e.kind === "frame") {
            frames++;
            exercise(e.frame, server);
            // Parse with the other side's grammar too: it must fail gracefully.
            exercise(e.frame, !server);
          } else if (e.kind === "line") {
            parseAuthenticateLine(e.line);
          } else {
            errors++;
          }
          if (rand() < 0.02) framer.expectRawLine();
        }
      }
    } catch (err) {
      const hex = Buffer.from(input).toString("hex");
      throw new Error(`iteration ${i} (seed ${SEED}, ${server ? "server" : "client"}) input ${hex}: ${String(err)}`);
    }
    if (i % 20_000 === 19_999) {
      Bun.gc(true);
      peak = Math.max(peak, process.memoryUsage().heapUsed - baseline);
    }
  }
  Bun.gc(true);
  const growth = process.memoryUsage().heapUsed - baseline;
  // Bounded heap: nothing is retained across inputs; transient peaks stay small.
  expect(growth).toBeLessThan(32 * 1024 * 1024);
  expect(peak).toBeLessThan(64 * 1024 * 1024);
  expect(frames).toBeGreaterThan(ITERATIONS / 2);
  expect(errors).toBeGreaterThan(0);
}, 60_000);
