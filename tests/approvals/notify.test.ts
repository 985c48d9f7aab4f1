/**
 * The notices' text and wire form (docs/approvals.md "Notices"): what the approver's notice and the sender's result
 * notice say, and that no text from the agent's message can add a header line to a notice; the notifier's limits
 * (notices at once, notices pending) against an upstream that never answers.
 */

import { describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  approverNotice,
  composeNotice,
  encodeHeaderText,
  NOTICE_CONCURRENCY,
  Notifier,
  noticeFor,
  senderNotice,
} from "../../src/approvals/notify.ts";
import {
  attachmentsShown,
  buildPreview,
  MORE_TEXT,
  PREVIEW_ATTACHMENTS,
  PREVIEW_LINE_CHARS,
  PREVIEW_LINES,
} from "../../src/approvals/preview.ts";
import { ApprovalStore } from "../../src/approvals/store.ts";
import { AuditLog } from "../../src/audit/index.ts";
import { parseConfig } from "../../src/config/index.ts";
import { decodeEncodedWords } from "../../src/mail/encoded-words.ts";
import { parseHeaderFields } from "../../src/mail/headers.ts";
import { clean } from "../../src/mail/index.ts";
import { MessageInspector } from "../../src/smtp/inspect.ts";
import { SealedStore } from "../../src/state/store.ts";

const MESSAGE = Buffer.from(
  [
    "From: alice@corp.test",
    "To: bob@corp.test, eve@outside.example",
    "Subject: Quarterly numbers",
    "Content-Type: multipart/mixed; boundary=b",
    "",
    "--b",
    "Content-Type: text/plain",
    "",
    "Hello Bob,",
    "the numbers are attached.",
    "--b",
    'Content-Disposition: attachment; filename="q3.xlsx"',
    "",
    "AAAA",
    "--b--",
    "",
  ].join("\r\n"),
);

function notice(link: string | null = "https://admin.example/approvals/ab?t=tok") {
  const preview = buildPreview("alice@corp.test", ["bob@corp.test", "eve@outside.example"], MESSAGE, true);
  return approverNotice({ id: "ab".repeat(16), rule: "outside needs a manager", expires: 0, preview, link });
}

describe("the approver's notice", () => {
  test("shows the sender, every recipient (outside ones marked), subject, size, attachments, text, rule, link", () => {
    const { subject, text } = notice();
    expect(subject).toBe("Approval needed: Quarterly numbers");
    const lines = text.split("\n");
    expect(lines).toContain("From:        alice@corp.test");
    expect(lines).toContain("To:          bob@corp.test");
    expect(lines).toContain("To:          eve@outside.example  (OUTSIDE the sender's domain)");
    expect(lines).toContain("Subject:     Quarterly numbers");
    expect(lines).toContain(`Size:        ${MESSAGE.length} octets`);
    expect(lines).toContain("Attachments: q3.xlsx");
    expect(lines).toContain("Rule:        outside needs a manager");
    expect(lines).toContain(`Held as:     ${"ab".repeat(16)}`);
    expect(lines).toContain("Expires:     1970-01-01T00:00:00.000Z");
    expect(lines).toContain("| Hello Bob,");
    expect(lines).toContain("| the numbers are attached.");
    expect(lines).toContain("https://admin.example/approvals/ab?t=tok");
    expect(text).toContain("Opening it changes nothing");
  });

  test("the text is shown decoded, as on the page, and the notice does not say otherwise", () => {
    const body = Buffer.from("Wire 1M USD to eve\n").toString("base64");
    const message = Buffer.from(
      "From: alice@corp.test\r\nSubject: Lunch\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n" +
        `Content-Transfer-Encoding: base64\r\n\r\n${body}\r\n`,
    );
    const preview = buildPreview("alice@corp.test", ["eve@outside.example"], message, false);
    const { text } = approverNotice({ id: "ab".repeat(16), rule: "r", expires: 0, preview, link: null });
    const lines = text.split("\n");
    expect(lines).toContain("| [text/plain]");
    expect(lines).toContain("| Wire 1M USD to eve");
    expect(text).not.toContain(body);
    expect(text).not.toContain("not decoded");
  });

  test("without base_url there is no link, and the command line is named", () => {
    const { text } = notice(null);
    expect(text).not.toContain("http");
    expect(text).toContain("No link: [approvals] base_url is not set.");
    expect(text).toContain(`mailgator approvals show|approve|deny ${"ab".repeat(16)} -c FILE`);
  });

  test("no attachments, no subject, no text", () => {
    const preview = buildPreview("a@x.test", ["b@x.test"], Buffer.from("From: a@x.test\r\n\r\n"), false);
    const { subject, text } = approverNotice({ id: "cd".repeat(16), rule: "r", expires: 0, preview, link: null });
    expect(subject).toBe("Approval needed: (no subject)");
    expect(text.split("\n")).toContain("Attachments: none");
    expect(text.split("\n")).toContain("To:          b@x.test");
    expect(text.split("\n")).toContain("| (empty)");
  });

  test("a subject the policy could not read: UNREADABLE in both notices, the fields as written", () => {
    const message = Buffer.from("From: a@x.test\r\nSubject: Lunch\r\nSubject: Wire 1M USD\r\n\r\nHi\r\n");
    const preview = buildPreview("a@x.test", ["b@x.test"], message, false);
    const { subject, text } = approverNotice({ id: "cd".repeat(16), rule: "r", expires: 0, preview, link: null });
    expect(subject).toBe("Approval needed: (subject UNREADABLE)");
    const why = "2 Subject fields; readers differ on which they show";
    expect(text.split("\n")).toContain(`Subject:     UNREADABLE (${why}); as written: "Lunch", "Wire 1M USD"`);
    const sent = senderNotice("cd".repeat(16), "denied", preview.subject, preview.subjectUnread !== undefined);
    expect(sent.text).toContain("(subject: UNREADABLE)");
  });

  test("an attachment without a file name, or parts the inspector could not read, are not shown as none", () => {
    // name*0= only (RFC 2231 continuation), no filename: the inspector counts it (Content-Type name, not text/*).
    const unnamed = Buffer.from(
      "Subject: s\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nhi\r\n--b\r\n" +
        'Content-Type: application/pdf; name*0="se"; name*1="cret.pdf"\r\n\r\nJVBER\r\n--b--\r\n',
    );
    const shown = (hasAttachment: boolean | null) =>
      approverNotice({
        id: "ab".repeat(16),
        rule: "r",
        expires: 0,
        preview: buildPreview("a@x.test", ["b@x.test"], unnamed, hasAttachment),
        link: null,
      }).text.split("\n");
    expect(shown(true)).toContain("Attachments: yes, without a file name");
    expect(shown(null)).toContain("Attachments: unknown: the message's parts could not be read");
    expect(shown(false)).toContain("Attachments: none");
    // A name the raw scan found never stands for the inspector's "unknown" (a body can write filename= too).
    const named = Buffer.from('Subject: s\r\n\r\nsee filename="notes.txt" below\r\n');
    const preview = (hasAttachment: boolean | null) => buildPreview("a@x.test", ["b@x.test"], named, hasAttachment);
    expect(attachmentsShown(preview(null), (n) => n)).toBe("notes.txt; unknown: the message's parts could not be read");
    expect(attachmentsShown(preview(false), (n) => n)).toBe("notes.txt");
  });

  test("attachments as the inspector read them: a decoy name cannot hide a continued name or a late part", () => {
    // What the SMTP session passes: the inspector's facts of the same bytes.
    const preview = (raw: string) => {
      const message = Buffer.from(raw, "latin1");
      const inspector = new MessageInspector();
      for (let i = 0; i < message.length; i += 1000) inspector.write(message.subarray(i, i + 1000));
      const facts = inspector.finish();
      return buildPreview("a@x.test", ["b@x.test"], message, facts.hasAttachment ?? null, {
        names: facts.attachments,
        complete: facts.attachmentsComplete,
      });
    };
    const part = (headers: string, body = "UEsDBA==") => `--b\r\n${headers}\r\n\r\n${body}\r\n`;
    const decoy = part('Content-Type: image/jpeg\r\nContent-Disposition: attachment; filename="holiday.jpg"');
    const head = "Subject: s\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n";
    // A name in RFC 2231 sections, which a scan for `filename="` does not read.
    const continued = part(
      'Content-Type: text/csv\r\nContent-Disposition: attachment; filename*0="customer-db"; filename*1=".csv"',
    );
    expect(attachmentsShown(preview(`${head}${decoy}${continued}--b--\r\n`), (n) => n)).toBe(
      "holiday.jpg, customer-db.csv",
    );
    // A part past the 256 KiB the text scan reads.
    const late = part('Content-Type: application/zip; name="customer-db.zip"', "A".repeat(300 * 1024));
    expect(attachmentsShown(preview(`${head}${decoy}${late}--b--\r\n`), (n) => n)).toBe("holiday.jpg, customer-db.zip");
    // A part without a name is counted; a body that writes filename= is not an attachment.
    const unnamed = part("Content-Type: application/pdf");
    const text = part("Content-Type: text/plain", 'see filename="fake.txt"');
    expect(attachmentsShown(preview(`${head}${text}${unnamed}--b--\r\n`), (n) => n)).toBe("1 without a file name");
    expect(attachmentsShown(preview(`${head}${decoy}${unnamed}--b--\r\n`), (n) => n)).toBe("holiday.jpg; and 1 more");
    expect(attachmentsShown(preview(`${head}${text}--b--\r\n`), (n) => n)).toBe("none");
    // Past PREVIEW_ATTACHMENTS names, the rest are counted.
    const many = Array.from({ length: PREVIEW_ATTACHMENTS + 2 }, (_, i) =>
      part(`Content-Type: application/pdf; name="f${i}.pdf"`),
    ).join("");
    const shownMany = attachmentsShown(preview(`${head}${many}--b--\r\n`), (n) => n);
    expect(shownMany).toEndWith(`f${PREVIEW_ATTACHMENTS - 1}.pdf; and 2 more`);
    // A structure read only in part says so beside what was found.
    const ambiguous = `${head}${decoy}--bjunk\r\n${unnamed}--b--\r\n`;
    expect(attachmentsShown(preview(ambiguous), (n) => n)).toMatch(
      /^holiday\.jpg.*; possibly more: the message's parts could not all be read$/,
    );
  });

  test("text past the shown lines is announced; a short text is not", () => {
    const body = (n: number) => Array.from({ length: n }, (_, i) => `line ${i + 1}`).join("\r\n");
    const notice = (n: number) =>
      approverNotice({
        id: "ab".repeat(16),
        rule: "r",
        expires: 0,
        preview: buildPreview("a@x.test", ["b@x.test"], Buffer.from(`Subject: s\r\n\r\n${body(n)}\r\n`), false),
        link: null,
      }).text.split("\n");
    expect(notice(PREVIEW_LINES)).toContain(`| line ${PREVIEW_LINES}`);
    expect(notice(PREVIEW_LINES)).not.toContain(MORE_TEXT);
    expect(notice(PREVIEW_LINES + 1)).not.toContain(`| line ${PREVIEW_LINES + 1}`);
    expect(notice(PREVIEW_LINES + 1)).toContain(MORE_TEXT);
    // Lines that look like MIME structure in a message that is not multipart are its text: shown.
    const hiding = Buffer.from(
      "Subject: s\r\n\r\nHi Bob.\r\n-- \r\n--Also: wire the money\r\nContent-Note: and more\r\n",
    );
    const shown = buildPreview("a@x.test", ["b@x.test"], hiding, false);
    expect(shown.text).toBe("[text/plain]\nHi Bob.\n-- \n--Also: wire the money\nContent-Note: and more");
    expect(shown.textCut).toBe(false);
    const long = buildPreview(
      "a@x.test",
      ["b@x.test"],
      Buffer.from(`Subject: s\r\n\r\n${"x".repeat(PREVIEW_LINE_CHARS + 1)}`),
      false,
    );
    expect(long.textCut).toBe(true);
  });

  test("an approver whose address is a vault agent's mailbox gets the notice without the link", () => {
    const config = parseConfig(
      `[accounts.main]\nusername = "bot@corp.test"\npassword = "p"\nidentities = ["desk@corp.test"]\n` +
        `[[agents]]\nname = "bot"\ntoken_hash = "sha256:${"0".repeat(64)}"\naccount = "main"\n`,
      "/cfg/mailgator.toml",
    );
    const link = "https://admin.example/approvals/ab?t=tok";
    const input = {
      id: "ab".repeat(16),
      rule: "r",
      expires: 0,
      preview: buildPreview("a@x.test", ["b@x.test"], MESSAGE, true),
      link,
    };
    // Without case, and a subaddress delivers to the same mailbox (RFC 5233).
    for (const reader of ["bot@corp.test", "Desk@Corp.test", "bot+approvals@corp.test", "DESK+x@corp.test"]) {
      const { text } = noticeFor(config, input, reader, "notices");
      expect(text).not.toContain(link);
      expect(text).not.toContain("?t=");
      expect(text).toContain("No link: this address is the mailbox of agent bot's account, which that agent can read.");
      expect(text).toContain(`mailgator approvals show|approve|deny ${"ab".repeat(16)}`);
    }
    expect(noticeFor(config, input, "boss@corp.test", "notices").text).toContain(link);
    expect(noticeFor(config, input, "bot@other.test", "notices").text).toContain(link);
    expect(noticeFor(config, input, "botany@corp.test", "notices").text).toContain(link);
  });

  test("a login without @ stands for any address of its name: no link to boss@ when an agent logs in as boss", () => {
    // The agent reads the mailbox the server finds for `boss` (its default domain, a directory's account name), and
    // sends as another identity or not at all: nothing in the config names boss@corp.test.
    const config = (username: string) =>
      parseConfig(
        `[accounts.inbox]\nusername = ${JSON.stringify(username)}\npassword = "p"\n` +
          `[accounts.notices]\nusername = "notices@corp.test"\npassword = "p"\n` +
          `[[agents]]\nname = "triage"\ntoken_hash = "sha256:${"0".repeat(64)}"\naccount = "inbox"\n`,
        "/cfg/mailgator.toml",
      );
    const link = "https://admin.example/approvals/ab?t=tok";
    const input = {
      id: "ab".repeat(16),
      rule: "r",
      expires: 0,
      preview: buildPreview("a@x.test", ["b@x.test"], MESSAGE, true),
      link,
    };
    for (const username of ["boss", "Boss", "CORP\\boss"])
      for (const approver of ["boss@corp.test", "BOSS@other.test", "boss+approvals@corp.test"]) {
        const { text } = noticeFor(config(username), input, approver, "notices");
        expect(text).not.toContain("?t=");
        expect(text).toContain(
          "No link: this address is the mailbox of agent triage's account, which that agent can read.",
        );
      }
    expect(noticeFor(config("boss"), input, "bossy@corp.test", "notices").text).toContain(link);
    expect(noticeFor(config("boss"), input, "chief@corp.test", "notices").text).toContain(link);
    // The notices sent as an account whose login is that name: its Sent folder is the agent's mailbox too.
    const sentAs = parseConfig(
      `[accounts.inbox]\nusername = "notices"\npassword = "p"\n` +
        `[accounts.notices]\nusername = "notices@corp.test"\npassword = "p"\n` +
        `[[agents]]\nname = "triage"\ntoken_hash = "sha256:${"0".repeat(64)}"\naccount = "inbox"\n`,
      "/cfg/mailgator.toml",
    );
    expect(noticeFor(sentAs, input, "chief@corp.test", "notices").text).toContain("sent as agent triage's account");
  });

  test("Gmail's spellings of an agent's address are its mailbox: dots and googlemail.com keep the link out", () => {
    const config = parseConfig(
      `[accounts.main]\nusername = "jdoe@gmail.com"\npassword = "p"\nidentities = ["sales.desk@googlemail.com"]\n` +
        `[accounts.notices]\nusername = "j.doe@googlemail.com"\npassword = "p"\n` +
        `[[agents]]\nname = "bot"\ntoken_hash = "sha256:${"0".repeat(64)}"\naccount = "main"\n`,
      "/cfg/mailgator.toml",
    );
    const link = "https://admin.example/approvals/ab?t=tok";
    const input = {
      id: "ab".repeat(16),
      rule: "r",
      expires: 0,
      preview: buildPreview("a@x.test", ["b@x.test"], MESSAGE, true),
      link,
    };
    for (const approver of ["j.doe@gmail.com", "J.D.O.E@googlemail.com", "jdoe+x@gmail.com", "salesdesk@gmail.com"])
      expect(noticeFor(config, input, approver, "other").text).toContain(
        "No link: this address is the mailbox of agent bot's account, which that agent can read.",
      );
    // Sent as Gmail's other spelling of the agent's own address: its Sent folder.
    expect(noticeFor(config, input, "boss@corp.test", "notices").text).toContain("sent as agent bot's account");
    // Only Gmail's domains: elsewhere a dot is part of the name.
    const corp = parseConfig(
      `[accounts.main]\nusername = "jdoe@corp.test"\npassword = "p"\n` +
        `[[agents]]\nname = "bot"\ntoken_hash = "sha256:${"0".repeat(64)}"\naccount = "main"\n`,
      "/cfg/mailgator.toml",
    );
    expect(noticeFor(corp, input, "j.doe@corp.test", "other").text).toContain(link);
    expect(noticeFor(config, input, "jdoe@gmail.example", "other").text).toContain(link);
  });

  test("a notice sent as an account an agent uses has no link: its Sent folder may keep a copy the agent reads", () => {
    const config = parseConfig(
      `[accounts.main]\nusername = "bot@corp.test"\npassword = "p"\n` +
        `[accounts.notices]\nusername = "notices@corp.test"\npassword = "p"\n` +
        `[[agents]]\nname = "bot"\ntoken_hash = "sha256:${"0".repeat(64)}"\naccount = "main"\n`,
      "/cfg/mailgator.toml",
    );
    const link = "https://admin.example/approvals/ab?t=tok";
    const input = {
      id: "ab".repeat(16),
      rule: "r",
      expires: 0,
      preview: buildPreview("a@x.test", ["b@x.test"], MESSAGE, true),
      link,
    };
    const { text } = noticeFor(config, input, "boss@corp.test", "main");
    expect(text).not.toContain(link);
    expect(text).not.toContain("?t=");
    expect(text).toContain(
      "No link: this notice is sent as agent bot's account, whose Sent folder may keep a copy that agent can read; " +
        "[approvals] notify_account should name an account no agent uses.",
    );
    expect(text).toContain(`mailgator approvals show|approve|deny ${"ab".repeat(16)}`);
    // Sent as an account no agent uses: the link.
    expect(noticeFor(config, input, "boss@corp.test", "notices").text).toContain(link);
    // Another entry for the agent's own mailbox (its login, in another case or with a subaddress): no link.
    const twin = parseConfig(
      `[accounts.main]\nusername = "bot@corp.test"\npassword = "p"\n` +
        `[accounts.notices]\nusername = "Bot+notices@corp.test"\npassword = "p"\n` +
        `[[agents]]\nname = "bot"\ntoken_hash = "sha256:${"0".repeat(64)}"\naccount = "main"\n`,
      "/cfg/mailgator.toml",
    );
    expect(noticeFor(twin, input, "boss@corp.test", "notices").text).not.toContain(link);
    expect(noticeFor(twin, input, "boss@corp.test", "notices").text).toContain("sent as agent bot's account");
  });

  test("control and reordering characters of the message are replaced, in the text and the subject", () => {
    const raw = Buffer.from("Subject: a\rBcc: x\r\n\r\nline\u202eevil\u0000\r\n", "latin1");
    const preview = buildPreview("a@x.test", ["b@x.test"], raw, false);
    const { subject, text } = approverNotice({ id: "ef".repeat(16), rule: "r\nX: y", expires: 0, preview, link: null });
    expect(subject).not.toMatch(/[\r\n]/);
    expect(text).not.toMatch(/[\r\u0000\u202e]/);
    expect(text).toContain("Rule:        r\uFFFDX: y");
  });
});

describe("the sender's result notice", () => {
  test("says the id, the result and the subject: nothing about who decided", () => {
    const id = "12".repeat(16);
    expect(senderNotice(id, "sent", "Hello")).toEqual({
      subject: `Held message ${id} sent`,
      text: `Your message ${id} (subject: Hello), held for approval, was approved and sent.\n`,
    });
    expect(senderNotice(id, "denied", null)).toEqual({
      subject: `Held message ${id} not sent`,
      text: `Your message ${id} (subject: (no subject)), held for approval, was denied: it was not sent.\n`,
    });
    expect(senderNotice(id, "expired", "x").text).toContain("expired without a decision: it was not sent");
    expect(senderNotice(id, "failed", "x").text).toContain("the upstream server refused it: it was not sent");
  });
});

describe("header encoding", () => {
  test("always encoded words, even for short ASCII: the message's words never appear as they are", () => {
    expect(encodeHeaderText("Approval needed: hello")).toBe(
      `=?UTF-8?B?${Buffer.from("Approval needed: hello").toString("base64")}?=`,
    );
    expect(encodeHeaderText("")).toBe("");
  });

  test("CR and LF cannot start a header line: they are replaced, then encoded (RFC 2047)", () => {
    const encoded = encodeHeaderText("hi\r\nBcc: victim@example.com\r\nX-Evil: 1");
    expect(encoded).toMatch(/^=\?UTF-8\?B\?/);
    // Only folds ("CRLF SP") separate the encoded words.
    expect(encoded.replace(/\r\n /g, "")).not.toMatch(/[\r\n]/);
    expect(decodeEncodedWords(encoded.replace(/\r\n /g, " "))).toBe(
      "hi\uFFFD\uFFFDBcc: victim@example.com\uFFFD\uFFFDX-Evil: 1",
    );
  });

  test("long or non-ASCII text: encoded words of at most 75 characters, split between characters", () => {
    const text = "Rückfrage zum Angebot — größere Menge 🚀 ".repeat(6);
    const encoded = encodeHeaderText(text);
    for (const word of encoded.split("\r\n ")) {
      expect(word.length).toBeLessThanOrEqual(75);
      expect(word).toMatch(/^=\?UTF-8\?B\?[A-Za-z0-9+/=]+\?=$/);
    }
    expect(decodeEncodedWords(encoded.replace(/\r\n /g, " "))).toBe(text);
  });

  test("text that looks like an encoded word is encoded, so it reads as written", () => {
    const encoded = encodeHeaderText("=?utf-8?Q?boss?=");
    expect(encoded).not.toBe("=?utf-8?Q?boss?=");
    expect(decodeEncodedWords(encoded)).toBe("=?utf-8?Q?boss?=");
  });

  test("clean replaces C0 (but TAB), DEL, C1 and bidirectional controls", () => {
    expect(clean("a\tb\u0007c\u007fd\u0085e\u2066f\u2029g")).toBe("a\tb\uFFFDc\uFFFDd\uFFFDe\uFFFDf\uFFFDg");
  });
});

describe("the notice on the wire", () => {
  test("exactly its own header fields, whatever the subject; the body is the text in base64", () => {
    const bytes = composeNotice({
      from: "notices@corp.test",
      to: "boss@corp.test",
      subject: "Approval needed: x\r\nBcc: victim@example.com\nX-Injected: yes\r\n\r\nbody",
      text: "line one\nline two",
      date: Date.UTC(2026, 11, 2, 12, 0, 0),
    });
    const wire = bytes.toString("latin1");
    expect(wire).not.toMatch(/[^\x00-\x7f]/);
    const end = wire.indexOf("\r\n\r\n");
    const fields = parseHeaderFields(bytes.subarray(0, end + 4));
    expect(fields).not.toBeNull();
    expect(fields!.map((f) => f.name.toLowerCase())).toEqual([
      "from",
      "to",
      "subject",
      "date",
      "message-id",
      "auto-submitted",
      "mime-version",
      "content-type",
      "content-transfer-encoding",
    ]);
    expect(wire).toContain("\r\nDate: Wed, 02 Dec 2026 12:00:00 +0000\r\n");
    expect(wire).toContain("From: Mailgator <notices@corp.test>\r\nTo: <boss@corp.test>\r\n");
    // Every line is CRLF-terminated and at most 78 characters (RFC 5322 §2.1.1).
    for (const line of wire.slice(0, -2).split("\r\n")) {
      expect(line).not.toMatch(/[\r\n]/);
      expect(line.length).toBeLessThanOrEqual(78);
    }
    expect(wire.endsWith("\r\n")).toBe(true);
    expect(Buffer.from(wire.slice(end + 4), "base64").toString("utf8")).toBe("line one\r\nline two");
  });
});

describe("the notifier's limits", () => {
  test(`${NOTICE_CONCURRENCY} notices at once, not one more; past the pending limit, a failure row`, async () => {
    // An upstream that accepts connections and says nothing until told to hang up.
    const sockets = new Set<Socket>();
    let hang = true;
    let accepted = 0;
    const server = createServer((s) => {
      accepted++;
      s.on("error", () => {});
      if (hang) sockets.add(s);
      else s.destroy();
    });
    const port = await new Promise<number>((resolve) =>
      server.listen(0, "127.0.0.1", () => resolve((server.address() as { port: number }).port)),
    );
    const dir = mkdtempSync(join(tmpdir(), "mg-notify-"));
    const queueMax = NOTICE_CONCURRENCY + 1;
    const approvers = Array.from({ length: queueMax + 1 }, (_, i) => `"a${i}@corp.test"`).join(", ");
    const config = parseConfig(
      `[smtp]\nlisten_addr = "127.0.0.1:2525"\nupstream_addr = "127.0.0.1:${port}"\nupstream_tls = "none"\n` +
        `[audit]\npath = "${join(dir, "audit.db")}"\n` +
        `[approvals]\nnotify_account = "notices"\n[approvals.groups.m]\nrecipients = [${approvers}]\n` +
        `[accounts.notices]\nusername = "notices@corp.test"\npassword = "p"\n` +
        `[[rules]]\nname = "hold"\naction = "ask"\nask_groups = ["m"]\noperations = ["send"]\n`,
      join(dir, "mailgator.toml"),
    );
    const audit = AuditLog.open(config.audit.path, { batchMs: 5, sync: "normal" });
    const state = SealedStore.open(config.state.path, { secretsFile: join(dir, "key"), env: {}, create: true })!;
    try {
      const store = new ApprovalStore(state);
      const row = await store.hold(
        {
          envelope: { from: "a@x.test", recipients: ["b@y.test"], eightBit: false },
          message: MESSAGE,
          account: null,
          credentials: null,
          agent: null,
          preview: buildPreview("a@x.test", ["b@y.test"], MESSAGE, true),
        },
        { name: "hold", index: 0, groups: ["m"] },
        Date.now() + 60_000,
      );
      const notifier = new Notifier({ config, store, audit, protocol: "smtp" }, { retryDelaysMs: [], queueMax });
      notifier.held(row);
      const rows = async () => {
        await audit.flush();
        return audit.query({ order: "asc" }).filter((r) => r.command === "APPROVAL NOTIFIED");
      };
      const deadline = Date.now() + 10_000;
      while (accepted < NOTICE_CONCURRENCY && Date.now() < deadline) await Bun.sleep(20);
      await Bun.sleep(300);
      expect(accepted).toBe(NOTICE_CONCURRENCY);
      const early = await rows();
      expect(early).toHaveLength(1);
      expect(early[0]!.reason).toContain(`a${queueMax}@corp.test (group m) not sent: more than ${queueMax} notices`);
      hang = false;
      for (const s of sockets) s.destroy();
      await notifier.idle();
      expect(accepted).toBe(queueMax);
      const all = await rows();
      expect(all).toHaveLength(queueMax + 1);
      expect(all.every((r) => r.decision === "error" && r.target === row.id && r.rule === "hold")).toBe(true);
      expect(store.row(row.id)!.state).toBe("held");
    } finally {
      server.close();
      await audit.close();
      state.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
