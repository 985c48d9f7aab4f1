/**
 * `withoutTimings` (src/imap/upstream-text.ts): the text of an upstream tagged reply loses Dovecot's timings and
 * keeps the rest. End to end against Dovecot: tests/imap/filtered-probes.test.ts ("upstream's timings").
 */
import { expect, test } from "bun:test";
import { withoutTimings } from "../../src/imap/upstream-text.ts";

test("the trailing timings of OK, NO and BAD texts go; everything else stays", () => {
  expect(withoutTimings("Search completed (0.003 + 0.000 + 0.002 secs).")).toBe("Search completed");
  expect(withoutTimings("Mailbox doesn't exist: x (0.017 + 0.000 + 0.016 secs).")).toBe("Mailbox doesn't exist: x");
  expect(withoutTimings("Error in IMAP command COPY: Invalid messageset (0.001 + 0.000 secs).")).toBe(
    "Error in IMAP command COPY: Invalid messageset",
  );
  expect(withoutTimings("Done (12.500 + 1.000 secs)")).toBe("Done");
  // An older Dovecot's single timing, and Cyrus's count of matches with its timing.
  expect(withoutTimings("Search completed (0.001 secs).")).toBe("Search completed");
  expect(withoutTimings("Completed (3 msgs in 0.002 secs)")).toBe("Completed");
  expect(withoutTimings("Completed (1 msg in 1 sec)")).toBe("Completed");
  expect(withoutTimings("Completed (0.000 secs 13 calls)")).toBe("Completed");
  expect(withoutTimings("Done (0.001secs). ")).toBe("Done");
  // Not timings, or not at the end: kept.
  expect(withoutTimings("Success")).toBe("Success");
  expect(withoutTimings("Quota exceeded (mailbox full)")).toBe("Quota exceeded (mailbox full)");
  expect(withoutTimings("(0.001 + 0.000 secs). then more")).toBe("(0.001 + 0.000 secs). then more");
  expect(withoutTimings("")).toBe("");
  // Long runs, as upstream may echo an agent's input: the same answers.
  const spaces = " ".repeat(60_000);
  expect(withoutTimings(`x${spaces}y`)).toBe(`x${spaces}y`);
  expect(withoutTimings(`x${spaces}(0.001 + 0.000 secs).`)).toBe("x");
  expect(withoutTimings(`x${"(".repeat(60_000)}1`)).toBe(`x${"(".repeat(60_000)}1`);
});
