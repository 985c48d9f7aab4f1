/**
 * Reads the notices about held messages (docs/approvals.md "Notices") that Postfix delivered into a Maildir: the
 * sink, or a test user's own Maildir. A notice is `Auto-Submitted: auto-generated` with its text in base64.
 */

import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { type HeaderField, parseHeaderFields } from "../../src/mail/headers.ts";

export interface Notice {
  /** X-Original-To: the envelope recipient this copy was delivered for. */
  readonly recipient: string;
  readonly fields: HeaderField[];
  /** The decoded text, LF line ends. */
  readonly body: string;
}

/** Notices in Maildir `dir` whose text contains `needle` (a held message's id). */
export function noticesIn(dir: string, needle: string): Notice[] {
  const out: Notice[] = [];
  for (const sub of ["new", "cur"]) {
    const d = join(dir, sub);
    if (!existsSync(d)) continue;
    for (const name of readdirSync(d)) {
      let text: string;
      try {
        text = readFileSync(join(d, name), "latin1").replace(/\r\n/g, "\n");
      } catch {
        continue;
      }
      if (!text.includes("\nAuto-Submitted: auto-generated\n")) continue;
      const split = text.indexOf("\n\n");
      const body = Buffer.from(text.slice(split + 2), "base64")
        .toString("utf8")
        .replace(/\r\n/g, "\n");
      if (!body.includes(needle)) continue;
      const fields = parseHeaderFields(Buffer.from(text.slice(0, split + 2), "latin1")) ?? [];
      const recipient = fields.find((f) => f.name === "x-original-to")?.value.toLowerCase() ?? "";
      out.push({ recipient, fields, body });
    }
  }
  return out;
}

/**
 * Waits until `get` finds `count` items, for `timeoutMs` on the monotonic clock (performance.now()): a step of the
 * wall clock (Date.now(), which a time sync or a paused virtual machine can move by seconds) neither cuts the wait
 * short nor makes it longer. The error says how long it waited, how many times it looked, and how far the wall clock
 * moved meanwhile when that differs.
 */
export async function waitFor<T>(what: string, get: () => T[], count: number, timeoutMs = 15_000): Promise<T[]> {
  const started = performance.now();
  const wallStarted = Date.now();
  for (let looks = 1; ; looks++) {
    const found = get();
    if (found.length >= count) return found;
    const waited = performance.now() - started;
    if (waited > timeoutMs) {
      const wall = Date.now() - wallStarted;
      const skew = Math.abs(wall - waited) > 1000 ? `; the wall clock moved ${wall} ms meanwhile` : "";
      throw new Error(
        `only ${found.length} of ${count} ${what} after waiting ${Math.round(waited)} ms ` +
          `(limit ${timeoutMs} ms, ${looks} looks${skew})`,
      );
    }
    await Bun.sleep(50);
  }
}
