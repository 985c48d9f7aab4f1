/**
 * COMPRESS (RFC 4978; docs/protocol.md §2): DEFLATE towards the agent, after login only, independent of upstream.
 * The tagged OK goes out uncompressed; everything after it, both ways, is deflated (src/imap/compress.ts).
 */

import { Refusal } from "../refusal.ts";
import type { CommandOf, CompressSession } from "./context.ts";

export async function compress(s: CompressSession, cmd: CommandOf<"COMPRESS">): Promise<void> {
  // RFC 4978 §3: an unknown mechanism gets BAD; a second COMPRESS gets NO [COMPRESSIONACTIVE].
  if (cmd.mechanism !== "DEFLATE") throw new Refusal("BAD", null, `Unknown compression mechanism ${cmd.mechanism}`);
  if (s.compressed) return s.tagged(cmd.tag, "NO", "COMPRESSIONACTIVE", "DEFLATE is already active");
  s.tagged(cmd.tag, "OK", null, "DEFLATE active");
  s.flush();
  s.startDeflate();
}
