/**
 * `mailgator approvals list|show` on a terminal (docs/approvals.md "What approvers see"): the subject, the text and
 * the attachment names of a held message are the agent's; an escape sequence in them (here one that moves the
 * cursor up and erases the line, which would hide the line naming an outside recipient) reaches the approver's
 * terminal as U+FFFD, in the text output and in the JSON (as `\uXXXX` escapes there, the same values for a reader).
 */

import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ApprovalStore } from "../../src/approvals/store.ts";
import { approvals } from "../../src/cli/commands/approvals.ts";
import { holdForCli, runCli } from "./cli-fixture.ts";

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** ESC [ 1 A (cursor up), ESC [ 2 K (erase the line), the same with CSI as one C1 octet, BEL. */
const HOSTILE = "\x1b[1A\x1b[2K\x9b2K\x07";
/** ... and as the command shows them, each replaced. */
const REPLACED = "\uFFFD[1A\uFFFD[2K\uFFFD2K\uFFFD";
/**
 * The preview reads the stored octets as UTF-8 (src/approvals/preview.ts), so the message is written as UTF-8: C0
 * and C1 controls reach it as they are. The policy cannot read a subject with controls in it, and neither does the
 * preview: it shows the field as written, marked unreadable.
 */
const SUBJECT = `report ${HOSTILE} end`;
/** What a terminal could act on: C0 (but TAB and the LF between output lines), DEL, C1, bidi controls. */
const RAW_CONTROL = /[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/;

/** A held message with the agent's controls in its preview; `reply`: then approved and refused with that reply. */
async function heldMessage(reply?: string): Promise<{ file: string; id: string }> {
  const dir = mkdtempSync(join(tmpdir(), "mg-approvals-cli-"));
  dirs.push(dir);
  const message = Buffer.from(
    `From: a@corp.test\r\nSubject: ${SUBJECT}\r\n` +
      'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n' +
      `--b\r\nContent-Type: text/plain\r\n\r\nfirst line ${HOSTILE}\rafter\r\nsecond line\r\n` +
      `--b\r\nContent-Disposition: attachment; filename="x${HOSTILE}.pdf"\r\n\r\nAAAA\r\n--b--\r\n`,
    "utf8",
  );
  const { file, id, state } = await holdForCli(dir, message, {
    sender: "a@corp.test",
    recipients: ["boss@corp.test", "x@outside.example"],
    hasAttachment: true,
  });
  const store = new ApprovalStore(state);
  try {
    // The preview holds the agent's controls as they were: what is shown is cleaned, not what is stored.
    const preview = store.details(id)!.preview;
    expect(preview.subject).toBeNull();
    expect(preview.subjectUnread?.fields).toEqual([SUBJECT]);
    expect(preview.text).toContain(`${HOSTILE}\rafter`);
    expect(preview.attachments.join()).toContain(HOSTILE);
    if (reply !== undefined) {
      expect(store.claim(id, "test").ok).toBe(true);
      store.sent(id, false, reply);
    }
    return { file, id };
  } finally {
    state.close();
  }
}

async function run(argv: string[]): Promise<string> {
  const out: string[] = [];
  const code = await approvals({ argv, out: (t) => out.push(t), env: {} });
  expect(code).toBe(0);
  return out.join("\n");
}

test("show prints the agent's subject, text and attachment names without their control characters", async () => {
  const { file, id } = await heldMessage();
  const text = await run(["show", id, "-c", file]);
  expect(text).not.toMatch(RAW_CONTROL);
  expect(text).toContain(
    "subject: UNREADABLE (it cannot be decoded, or has a control character in it); as written: " +
      `"report ${REPLACED} end"`,
  );
  expect(text).toContain(`| first line ${REPLACED}\uFFFDafter\n| second line`);
  expect(text).toContain(`attachments: x${REPLACED}.pdf`);
  expect(text).toContain("to: x@outside.example  (outside the sender's domain)");

  const json = await run(["show", id, "-c", file, "--json"]);
  expect(json).not.toMatch(RAW_CONTROL);
  // The JSON reader still gets the agent's text as it was.
  const parsed = JSON.parse(json) as { preview: { subjectUnread: { fields: string[] }; attachments: string[] } };
  expect(parsed.preview.subjectUnread.fields).toEqual([SUBJECT]);
  expect(parsed.preview.attachments).toEqual([`x${HOSTILE}.pdf`]);
});

test("list prints no control character either, as text or JSON: an upstream reply is not trusted", async () => {
  // The upstream server's reply is kept with the row and listed (JSON): a C1 CSI in it is escaped there.
  const reply = `550 \x9b2K\u202e\u200frefused`;
  const { file, id } = await heldMessage(reply);
  const text = await run(["list", "-c", file]);
  expect(text).toContain(`${id}  failed`);
  expect(text).not.toMatch(RAW_CONTROL);
  const json = await run(["list", "-c", file, "--json"]);
  expect(json).not.toMatch(RAW_CONTROL);
  expect(json).toContain("550 \\u009b2K\\u202e\\u200frefused");
  expect(JSON.parse(json) as unknown).toMatchObject([{ id, upstreamReply: reply }]);
});

test("show quotes the agent's text after `| `: lines in it cannot pass for the summary's own", async () => {
  const dir = mkdtempSync(join(tmpdir(), "mg-approvals-cli-"));
  dirs.push(dir);
  // A second summary, naming an inside recipient, written to be what the approver's screen shows last.
  const forged = [
    "0123456789abcdef0123456789abcdef: held (rule ask outside; asks managers)",
    "from: a@corp.test",
    "to: boss@corp.test",
    "subject: Lunch",
    "size: 812 octets; attachments: none",
  ];
  const { file, id, state } = await holdForCli(
    dir,
    Buffer.from(`From: a@corp.test\r\nSubject: Lunch\r\n\r\nSee you at noon.\r\n\r\n${forged.join("\r\n")}\r\n`),
    { sender: "a@corp.test", recipients: ["x@outside.example"] },
  );
  state.close();
  const lines = (await run(["show", id, "-c", file])).split("\n");
  expect(lines.filter((l) => l.startsWith("to: "))).toEqual(["to: x@outside.example  (outside the sender's domain)"]);
  expect(lines.filter((l) => l.startsWith("from: "))).toEqual(["from: a@corp.test"]);
  expect(lines.slice(lines.indexOf("| [text/plain]"))).toEqual([
    "| [text/plain]",
    "| See you at noon.",
    "| ",
    ...forged.map((l) => `| ${l}`),
  ]);

  // No text at all is said so, in the same frame.
  const other = mkdtempSync(join(tmpdir(), "mg-approvals-cli-"));
  dirs.push(other);
  const empty = await holdForCli(other, Buffer.from("From: a@corp.test\r\nSubject: Lunch\r\n\r\n"), {
    sender: "a@corp.test",
  });
  empty.state.close();
  expect((await run(["show", empty.id, "-c", empty.file])).split("\n").at(-1)).toBe("| (empty)");
});

test("show, run as a process, marks what a terminal draws as nothing or piles up, and keeps text in use", async () => {
  const dir = mkdtempSync(join(tmpdir(), "mg-approvals-cli-"));
  dirs.push(dir);
  // A variation selector, the Hangul fillers, the combining grapheme joiner, an unassigned tag character, U+2065, a
  // private-use character, a mark with no base (after a space) and five marks on one letter, one past
  // MAX_COMBINING_MARKS (src/mail/display.ts): each is shown as U+FFFD.
  const invisible =
    "x\ufe0f \u115f\u1160\u3164\uffa0 c\u034fd \u{e0000}\u2065 \ue000 \u0301 b\u0301\u0302\u0303\u0304\u0305";
  const replaced = `x\uFFFD ${"\uFFFD".repeat(4)} c\uFFFDd ${"\uFFFD".repeat(2)} \uFFFD \uFFFD b${"\uFFFD".repeat(5)}`;
  // Decomposed é, Vietnamese with two marks on a vowel, Hindi, and four marks on one letter: shown as they are.
  const readable = "re\u0301sume\u0301 Vie\u0323\u0302t \u0928\u092e\u0938\u094d\u0924\u0947 a\u0301\u0302\u0303\u0304";
  const { file, id, state } = await holdForCli(
    dir,
    Buffer.from(
      `From: a@corp.test\r\nSubject: ${readable}\r\nMIME-Version: 1.0\r\n` +
        'Content-Type: multipart/mixed; boundary="b"\r\n\r\n' +
        `--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n${readable}\r\n${invisible}\r\n` +
        `--b\r\nContent-Disposition: attachment; filename="report${invisible}.pdf"\r\n\r\nAAAA\r\n--b--\r\n`,
      "utf8",
    ),
    { sender: "a@corp.test", recipients: ["x@outside.example"], hasAttachment: true },
  );
  state.close();
  const r = runCli("approvals", "show", id, "-c", file);
  expect(r.code).toBe(0);
  expect(r.stdout).not.toMatch(/[\p{Default_Ignorable_Code_Point}\p{Cn}\p{Co}]|(?<![\p{L}\p{M}])\p{M}|\p{M}{5}/u);
  // The subject is read as the policy reads it, in NFC: é and ệ composed, the Hindi and the four marks as they are.
  expect(r.stdout).toContain(`subject: ${readable.normalize("NFC")}\n`);
  expect(r.stdout).toContain(`| ${readable}\n| ${replaced}\n`);
  expect(r.stdout).toContain(`attachments: report${replaced}.pdf\n`);

  const json = runCli("approvals", "show", id, "-c", file, "--json");
  expect(json.code).toBe(0);
  expect(json.stdout).not.toMatch(/[\p{Default_Ignorable_Code_Point}\p{Cn}\p{Co}]|(?<![\p{L}\p{M}])\p{M}|\p{M}{5}/u);
  const parsed = JSON.parse(json.stdout) as { preview: { attachments: string[]; text: string } };
  expect(parsed.preview.attachments).toEqual([`report${invisible}.pdf`]);
  expect(parsed.preview.text).toContain(`${readable}\n${invisible}`);
});
