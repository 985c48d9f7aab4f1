/**
 * Microbenchmark: what one agent command's parse costs when the processor's caches are warm, as in a loop, and
 * when they were emptied by other work since the last call, as in the proxy between two commands of one session
 * (docs/benchmarks.md, "Where one command's time goes, step by step"). Between two timed calls it reads a buffer of
 * 0 to 16 MiB, which pushes the parser's code and data out of the caches.
 *
 *   bun scripts/bench/cold-cache.ts [calls per size, default 20000]
 */
import { Framer, type FramerEvent, parseCommand } from "../../src/imap/wire/index.ts";
import { benchOptions } from "./args.ts";

const CALLS = benchOptions(process.argv.slice(2), "bun scripts/bench/cold-cache.ts [calls per size]", {
  positional: "calls per size",
}).positional(20_000);
const SIZES_KIB = [0, 256, 1024, 4096, 16384];

/** 1,000 framed `UID FETCH n (FLAGS)` commands, as the session's framer hands them to the parser. */
function frames(): FramerEvent[] {
  const framer = new Framer({ role: "server", allowLiteral8: true });
  const out: FramerEvent[] = [];
  for (let i = 0; i < 1000; i++) {
    framer.feed(new TextEncoder().encode(`c${i} UID FETCH ${i + 1} (FLAGS)\r\n`));
    const ev = framer.next();
    if (ev !== null) out.push(ev);
  }
  return out;
}

const commands = frames().map((ev) => {
  if (ev.kind !== "frame") throw new Error("cold-cache: the framer did not frame a command");
  return ev.frame;
});
// Warm-up: the engine's optimizing compilers see the parser first.
for (let i = 0; i < 200_000; i++) parseCommand(commands[i % commands.length]!);

let sink = 0;
for (const kib of SIZES_KIB) {
  const other = new Uint8Array(kib * 1024).fill(1);
  let spent = 0;
  for (let i = 0; i < CALLS; i++) {
    for (let j = 0; j < other.length; j += 64) sink += other[j]!;
    const began = performance.now();
    const parsed = parseCommand(commands[i % commands.length]!);
    spent += performance.now() - began;
    if (!parsed.ok) throw new Error("cold-cache: a command did not parse");
  }
  const each = ((spent * 1000) / CALLS).toFixed(2);
  console.log(`${String(kib).padStart(6)} KiB read between calls: parseCommand ${each} µs per command`);
}
if (sink < 0) console.log(sink);
