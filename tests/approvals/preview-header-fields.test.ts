/**
 * Approvers see the header's author and recipient fields with their display names (src/approvals/preview.ts,
 * docs/approvals.md "What approvers see"): the proxy checks the addresses, but a recipient reads the name. And every
 * other field, which goes out as well whether or not a client shows it.
 */
import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { approverNotice } from "../../src/approvals/notify.ts";
import {
  buildPreview,
  headerFieldLines,
  otherFieldLines,
  PREVIEW_HEADER_FIELDS,
  PREVIEW_LINE_CHARS,
  PREVIEW_OTHER_FIELDS,
} from "../../src/approvals/preview.ts";
import { holdForCli, runCli as run } from "./cli-fixture.ts";

const dir = mkdtempSync(join(tmpdir(), "mg-preview-header-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const SPOOF = "From: =?utf-8?q?CEO=3A_urgent_wire?= <bot@corp.test>\r\n";

function message(header: string): Buffer {
  return Buffer.from(`${header}Subject: numbers\r\n\r\nplease pay\r\n`);
}

test("the display name of From is shown decoded, with the other author and recipient fields in order", () => {
  const p = buildPreview(
    "bot@corp.test",
    ["x@out.test"],
    message(`${SPOOF}Reply-To: "Accounts" <bot@corp.test>\r\nTo: "Your bank" <x@out.test>\r\nX-Other: no\r\n`),
    false,
  );
  expect(p.headerFields).toEqual([
    { name: "From", value: "CEO: urgent wire <bot@corp.test>" },
    { name: "Reply-To", value: '"Accounts" <bot@corp.test>' },
    { name: "To", value: '"Your bank" <x@out.test>' },
  ]);
  expect(headerFieldLines(p, (t) => t)).toEqual([
    "From: CEO: urgent wire <bot@corp.test>",
    'Reply-To: "Accounts" <bot@corp.test>',
    'To: "Your bank" <x@out.test>',
  ]);
});

test(`at most PREVIEW_HEADER_FIELDS fields, the rest counted; a long one cut, saying so`, () => {
  const many = Array.from({ length: PREVIEW_HEADER_FIELDS + 2 }, (_, i) => `Cc: c${i}@corp.test\r\n`).join("");
  const p = buildPreview("bot@corp.test", ["c0@corp.test"], message(`${SPOOF}${many}`), false);
  expect(p.headerFields?.length).toBe(PREVIEW_HEADER_FIELDS);
  expect(p.headerFieldCount).toBe(PREVIEW_HEADER_FIELDS + 3);
  expect(headerFieldLines(p, (t) => t).at(-1)).toBe("(and 3 more such fields)");
  const long = `From: "${"a".repeat(PREVIEW_LINE_CHARS)} harmless" <bot@corp.test>\r\n`;
  const cut = buildPreview("bot@corp.test", ["x@out.test"], message(long), false);
  expect(cut.headerFields?.[0]?.value).toEndWith("… (field cut)");
  expect(cut.headerFields?.[0]?.value.length).toBe(PREVIEW_LINE_CHARS + "… (field cut)".length);
});

test("approvals show prints them, controls escaped", async () => {
  const { file, id, state } = await holdForCli(dir, message(`From: "CEO\u202e" <bot@corp.test>\r\n`));
  state.close();
  const p = run("approvals", "show", id, "-c", file);
  expect(p.code).toBe(0);
  expect(p.stdout).toContain('header From: "CEO');
  expect(p.stdout).toContain("bot@corp.test>");
  expect(p.stdout).not.toContain("\u202e");
});

test("every other header field is kept too, in order, decoded, cut and counted: it goes out unseen otherwise", () => {
  const others =
    "Date: Wed, 02 Dec 2026 12:00:00 +0000\r\nX-Notes: =?utf-8?q?Kunden_f=C3=BCr_Bob?=\r\n" +
    `X-Long: ${"z".repeat(PREVIEW_LINE_CHARS + 1)}\r\n`;
  const p = buildPreview("bot@corp.test", ["x@out.test"], message(`${SPOOF}${others}`), false);
  // The author fields as before; Subject, shown on its own line, is in neither list.
  expect(p.headerFields?.map((f) => f.name)).toEqual(["From"]);
  expect(p.otherHeaderFields?.slice(0, 2)).toEqual([
    { name: "Date", value: "Wed, 02 Dec 2026 12:00:00 +0000" },
    { name: "X-Notes", value: "Kunden für Bob" },
  ]);
  expect(p.otherHeaderFields?.[2]?.value).toBe(`${"z".repeat(PREVIEW_LINE_CHARS)}… (field cut)`);
  const many = Array.from({ length: PREVIEW_OTHER_FIELDS + 2 }, (_, i) => `X-F${i}: ${i}\r\n`).join("");
  const lots = buildPreview("bot@corp.test", ["x@out.test"], message(many), false);
  expect(lots.otherHeaderFields).toHaveLength(PREVIEW_OTHER_FIELDS);
  expect(otherFieldLines(lots, (t) => t).at(-1)).toBe("(and 2 more header fields)");
  // The approver's notice lists them as well.
  const notice = approverNotice({ id: "ab".repeat(16), rule: "r", expires: 0, preview: p, link: null });
  expect(notice.text).toContain("Also header: X-Notes: Kunden für Bob");
});

test("approvals show prints the other fields, controls escaped", async () => {
  const { file, id, state } = await holdForCli(dir, message(`X-Notes: leak\u202e of the customer list\r\n`));
  state.close();
  const p = run("approvals", "show", id, "-c", file);
  expect(p.code).toBe(0);
  expect(p.stdout).toContain("also header X-Notes: leak\ufffd of the customer list");
  const json = run("approvals", "show", id, "-c", file, "--json");
  expect(JSON.parse(json.stdout).preview.otherHeaderFields).toEqual([
    { name: "X-Notes", value: "leak\u202e of the customer list" },
  ]);
});
