/**
 * A long subject in what approvers see (docs/approvals.md "What approvers see"): the preview keeps the first
 * PREVIEW_LINE_CHARS characters of it, and what follows the cut is what the recipient reads too. The cut must say so,
 * as a cut file name and a cut line of text do: a subject padded to the limit would otherwise show the approver its
 * harmless start as the whole subject, on the page, in the notice and on the command line alike.
 */

import { describe, expect, test } from "bun:test";
import { approverNotice } from "../../src/approvals/notify.ts";
import { buildPreview, PREVIEW_LINE_CHARS, subjectShown } from "../../src/approvals/preview.ts";
import { clean } from "../../src/mail/index.ts";

function held(subjects: readonly string[]) {
  const message = Buffer.from(
    ["From: alice@corp.test", "To: eve@outside.example", ...subjects.map((s) => `Subject: ${s}`), "", "Hello", ""].join(
      "\r\n",
    ),
  );
  return buildPreview("alice@corp.test", ["eve@outside.example"], message, false, { names: [], complete: true });
}

describe("a subject longer than the preview keeps", () => {
  const hidden = "and the customer list is attached";
  const long = `Lunch on Friday${"-".repeat(PREVIEW_LINE_CHARS)} ${hidden}`;

  test("is shown cut, and says that it was cut", () => {
    const p = held([long]);
    const shown = subjectShown(p, clean);
    expect(shown).not.toContain(hidden);
    expect(shown.startsWith("Lunch on Friday")).toBe(true);
    expect(shown).toContain("(subject cut)");
    expect(approverNotice({ id: "ab".repeat(16), rule: "r", expires: 0, preview: p, link: null }).subject).toContain(
      "(subject cut)",
    );
  });

  test("one that fits is shown whole, with no mark", () => {
    const fits = "x".repeat(PREVIEW_LINE_CHARS);
    expect(subjectShown(held([fits]), clean)).toBe(fits);
  });

  test("a Subject field shown as written (the subject unreadable) says it was cut too", () => {
    const shown = subjectShown(held([long, "Lunch"]), clean);
    expect(shown).toContain("UNREADABLE");
    expect(shown).not.toContain(hidden);
    expect(shown).toContain("(field cut)");
  });
});
