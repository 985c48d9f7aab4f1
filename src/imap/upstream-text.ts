/**
 * Text from the upstream server that reaches the agent: a tagged reply's text is passed on, as it says why a command
 * failed, but not what it says about the work upstream did (docs/protocol.md §7).
 */

/**
 * A trailing parenthesized note with a number of seconds in it: Dovecot's `(0.001 + 0.000 + 0.001 secs).` on every
 * tagged reply, an older Dovecot's `(0.001 secs).`, Cyrus's `(3 msgs in 0.002 secs)` and `(0.000 secs 13 calls)`.
 */
const TIMING_NOTE = /^\([^()]*[0-9]\s*secs?\b[^()]*\)\.?\s*$/;

/**
 * Upstream's text of a tagged reply as the agent gets it: without the timings and counts servers append. They
 * measure the work upstream did, hidden messages and folders included (a search of a filtered folder takes longer
 * the more hidden messages it holds; Cyrus counts the messages it matched), so they would tell the agent about what
 * it cannot see (docs/protocol.md §7). The rest of the text says why a command failed and is kept.
 */
export function withoutTimings(text: string): string {
  // Only the last note is tried, anchored: an unanchored pattern retried at every offset took seconds on a text
  // with a long run of white space (upstream may echo what the agent sent).
  const open = text.lastIndexOf("(");
  if (open === -1 || !TIMING_NOTE.test(text.slice(open))) return text;
  return text.slice(0, open).trimEnd();
}
