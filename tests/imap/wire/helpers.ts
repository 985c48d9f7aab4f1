/** Shared helpers for the wire-layer tests. */
import { type Frame, Framer, type FramerEvent, type FramerOptions } from "../../../src/imap/wire/index.ts";

export const te = new TextEncoder();
export const td = new TextDecoder();

export function bytes(s: string): Uint8Array {
  return te.encode(s);
}

/**
 * A frame built directly from a single-line (or multi-line with literals) string, through a server framer accepting
 * all literals.
 */
export function frameOf(s: string, role: FramerOptions["role"] = "server"): Frame {
  const events = run(new Framer({ role }), [bytes(s)], "accept");
  const frames = events.filter((e) => e.kind === "frame");
  if (frames.length !== 1 || frames[0]!.kind !== "frame") {
    throw new Error(`expected one frame from ${JSON.stringify(s)}, got ${JSON.stringify(events.map((e) => e.kind))}`);
  }
  return frames[0]!.frame;
}

/** Feeds chunks, pulling all events; literal requests are answered by `decide`. */
export function run(
  framer: Framer,
  chunks: readonly Uint8Array[],
  decide: "accept" | "refuse" | ((e: FramerEvent) => "accept" | "refuse"),
): FramerEvent[] {
  const out: FramerEvent[] = [];
  const pump = (): void => {
    for (;;) {
      const e = framer.next();
      if (e === null) return;
      out.push(e);
      if (e.kind === "literal") {
        const d = typeof decide === "function" ? decide(e) : decide;
        if (d === "accept") framer.acceptLiteral();
        else framer.refuseLiteral();
      }
    }
  };
  for (const c of chunks) {
    framer.feed(c);
    pump();
  }
  return out;
}

/** Splits `data` into chunks at the given positions. */
export function splitAt(data: Uint8Array, ...positions: number[]): Uint8Array[] {
  const out: Uint8Array[] = [];
  let prev = 0;
  for (const p of positions) {
    out.push(data.subarray(prev, p));
    prev = p;
  }
  out.push(data.subarray(prev));
  return out;
}

/** A readable summary of events for table comparisons. */
export function summarize(events: readonly FramerEvent[]): string[] {
  return events.map((e): string => {
    switch (e.kind) {
      case "frame": {
        const parts = e.frame.lines.map((l, i) => {
          const literal = e.frame.literals[i];
          return td.decode(l) + (literal !== undefined ? `<${td.decode(literal.data)}>` : "");
        });
        return `frame ${parts.join("")}`;
      }
      case "line":
        return `line ${td.decode(e.line)}`;
      case "literal":
        return `literal ${e.request.tag} ${e.request.command} ${e.request.size}${e.request.nonSync ? "+" : ""}`;
      case "error":
        return `error ${e.error.code}${e.error.fatal ? " fatal" : ""}`;
      default:
        throw new Error("summarize: unknown event");
    }
  });
}
