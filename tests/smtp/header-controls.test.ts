/**
 * A control character in a header line (a C0 control other than HTAB, DEL, or a C1 control in UTF-8) refuses the
 * message at the end of DATA (docs/smtp.md "What the message says"): RFC 5322 allows one only in its obsolete syntax
 * (§3.2.2, §4), which must not be generated, and none in a msg-id (§3.6.4). Before, an allowed send whose Message-ID
 * (or Subject, To, a MIME part's Content-Disposition, ...) held an escape sequence was relayed as written; only its
 * audit row escaped it. Against the real Postfix and Dovecot, with nodemailer sending each message as written (`raw`):
 * `554 5.6.0` naming the field, nothing in the recipient's mailbox or in Postfix's log, and the `DATA` row `deny`; a
 * message with UTF-8 header fields (RFC 6532), tabs and controls in its body, over the same listener, is delivered.
 */

import { describe, expect, test } from "bun:test";
import nodemailer from "nodemailer";
import { mailboxMessages, waitForDelivery } from "../fixtures/delivery.ts";
import { marker, postfixLog, type TestProxy, upstreams, useTestProxy } from "./helpers.ts";

const RULES = `
[[rules]]
name = "own domain"
action = "allow"
operations = ["send"]
to = "*@mailgator.test"

[[rules]]
name = "nothing else"
action = "deny"
`;

let p: TestProxy;
useTestProxy({ rules: RULES }, (proxy) => (p = proxy));

const alice = () => upstreams().users[0]!;
const bob = () => upstreams().users[1]!;

/** Sends `raw` (LF line ends, UTF-8) from alice to bob with nodemailer; the proxy's final reply. */
async function send(raw: string): Promise<string> {
  const transport = nodemailer.createTransport({
    host: "127.0.0.1",
    port: p.port,
    secure: false,
    ignoreTLS: true,
    auth: { user: alice().user, pass: alice().password },
  });
  try {
    const info = await transport.sendMail({
      envelope: { from: alice().address, to: [bob().address] },
      raw: Buffer.from(raw.replace(/\r?\n/g, "\r\n"), "utf8"),
    });
    return String(info.response);
  } catch (e) {
    return String((e as { response?: unknown }).response ?? e);
  } finally {
    transport.close();
  }
}

/** A message from alice to bob whose header has `fields` (LF line ends) after its usual fields. */
function messageWith(token: string, fields: string, body = `hello ${token}\n`): string {
  return (
    `From: Alice <${alice().address}>\nTo: Bob <${bob().address}>\nX-Test-Token: ${token}\n` +
    `Date: Mon, 7 Dec 2026 06:00:00 +0000\n${fields}\n${body}`
  );
}

interface Case {
  readonly name: string;
  /** The header fields holding the control, for the token `t`. */
  readonly fields: (t: string) => string;
  /** What the reply and the row name: the control and where it is. */
  readonly named: string;
}

const PART = (t: string, disposition: string) =>
  `Subject: part ${t}\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="b"\n\n--b\n` +
  `Content-Type: text/plain\n\nhi\n--b\nContent-Type: text/plain\nContent-Disposition: ${disposition}\n\nAAAA\n--b--`;

const CASES: readonly Case[] = [
  {
    name: "an escape sequence in Message-ID",
    fields: (t) => `Message-ID: <${t}\x1b[2K@mailgator.test>\nSubject: id ${t}\n`,
    named: "0x1B in the header field message-id",
  },
  {
    name: "BEL in Subject",
    fields: (t) => `Message-ID: <${t}@mailgator.test>\nSubject: ring ${t}\x07\n`,
    named: "0x07 in the header field subject",
  },
  {
    name: "DEL in a folded line of Subject",
    fields: (t) => `Message-ID: <${t}@mailgator.test>\nSubject: folded ${t}\n\tdel \x7f here\n`,
    named: "0x7F in the header field subject",
  },
  {
    name: "a VT in To",
    fields: (t) => `Message-ID: <${t}@mailgator.test>\nSubject: s ${t}\nTo: \v${bob().address}\n`,
    named: "0x0B in the header field to",
  },
  {
    name: "0x01 in a Cc display name",
    fields: (t) => `Message-ID: <${t}@mailgator.test>\nSubject: s ${t}\nCc: a\x01b <${bob().address}>\n`,
    named: "0x01 in the header field cc",
  },
  {
    name: "0x1F in Bcc",
    fields: (t) => `Message-ID: <${t}@mailgator.test>\nSubject: s ${t}\nBcc: ${bob().address}\x1f\n`,
    named: "0x1F in the header field bcc",
  },
  {
    name: "a form feed in Reply-To",
    fields: (t) => `Message-ID: <${t}@mailgator.test>\nSubject: s ${t}\nReply-To: \f${alice().address}\n`,
    named: "0x0C in the header field reply-to",
  },
  {
    name: "an escape in a Sender display name",
    fields: (t) => `Message-ID: <${t}@mailgator.test>\nSubject: s ${t}\nSender: "A\x1b]0;x\x07" <${alice().address}>\n`,
    named: "0x1B in the header field sender",
  },
  {
    name: "0x08 in In-Reply-To",
    fields: (t) => `Message-ID: <${t}@mailgator.test>\nSubject: s ${t}\nIn-Reply-To: <x\b@mailgator.test>\n`,
    named: "0x08 in the header field in-reply-to",
  },
  {
    name: "0x1B in References",
    fields: (t) => `Message-ID: <${t}@mailgator.test>\nSubject: s ${t}\nReferences: <a@x.test>\n <b\x1b@x.test>\n`,
    named: "0x1B in the header field references",
  },
  {
    name: "0x0E in a field no rule reads",
    fields: (t) => `Message-ID: <${t}@mailgator.test>\nSubject: s ${t}\nX-Mailer: shift\x0eout\n`,
    named: "0x0E in the header field x-mailer",
  },
  {
    name: "an 8-bit CSI (U+009B, UTF-8) in Message-ID",
    fields: (t) => `Message-ID: <${t}\u009b2K@mailgator.test>\nSubject: c1 ${t}\n`,
    named: "U+009B in the header field message-id",
  },
  {
    name: "U+0085 (NEL, UTF-8) in Subject",
    fields: (t) => `Message-ID: <${t}@mailgator.test>\nSubject: next ${t}\u0085line\n`,
    named: "U+0085 in the header field subject",
  },
  {
    name: "an escape in a MIME part's file name",
    fields: (t) => `Message-ID: <${t}@mailgator.test>\n${PART(t, 'attachment; filename="a\x1b[1Ab.txt"')}`,
    named: "0x1B in a MIME part's header field content-disposition",
  },
];

describe("a control character in a header refuses the message; nothing reaches Postfix or Dovecot", () => {
  test("each field, with a clean UTF-8 message delivered after them over the same listener", async () => {
    const run = marker();
    const tokens: string[] = [];
    for (const [n, c] of CASES.entries()) {
      const token = `${run}-${n}`;
      tokens.push(token);
      const reply = await send(messageWith(token, c.fields(token)));
      expect(reply, c.name).toBe(`554 5.6.0 Control character ${c.named}; nothing was sent`);
    }
    // The DATA row of each, as for the other refusals of the message itself, with its Message-ID as written.
    const rows = (await p.rows()).filter((r) => r.command === "DATA" && r.reason.startsWith("control character"));
    expect(rows.map((r) => r.reason)).toEqual(CASES.map((c) => `control character ${c.named}`));
    for (const row of rows) expect(row).toMatchObject({ decision: "deny", operation: "mail:send", protocol: "smtp" });
    expect(rows[0]!.target).toBe(`<${tokens[0]}\x1b[2K@mailgator.test>`);

    // The control: UTF-8 in the display names, Subject, Message-ID, a part's file name (RFC 6532), tabs, and control
    // characters in the body, which RFC 5322 §2.3 allows there: delivered to bob's mailbox, as written.
    const ok = `${run}-clean`;
    const subject = `Grüße\t– café ☕ ${ok}`;
    const clean = messageWith(
      ok,
      `Message-ID: <${ok}.ünï@mailgator.test>\nSubject: ${subject}\n\tfolded\nComments: Zoë\n` +
        `MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="b"\n\n--b\nContent-Type: text/plain\n\n` +
        `body \x1b[2K bell \x07 ff \f\n--b\nContent-Type: text/plain; charset=utf-8\n` +
        `Content-Disposition: attachment; filename="résumé.txt"\n\nAAAA\n--b--`,
      "",
    );
    expect(await send(clean)).toStartWith("250");
    const [delivered] = await waitForDelivery(bob(), ok);
    const text = delivered!.raw();
    expect(text).toContain(`Subject: ${subject}\n\tfolded\n`);
    expect(text).toContain(`Message-ID: <${ok}.ünï@mailgator.test>`);
    expect(text).toContain('filename="résumé.txt"');
    expect(text).toContain("body \x1b[2K bell \x07 ff \f\n");
    expect(postfixLog()).toContain(ok);

    // Postfix delivered the later message: none of the refused ones is in bob's mailbox, nor named in its log.
    for (const token of tokens) {
      expect(mailboxMessages(bob(), token)).toEqual([]);
      expect(postfixLog()).not.toContain(token);
    }
  });

  test("a NUL in Message-ID is refused as before, as the NUL octet it is", async () => {
    const token = marker();
    const reply = await send(messageWith(token, `Message-ID: <${token}\0@mailgator.test>\nSubject: nul ${token}\n`));
    expect(reply).toBe("554 5.6.0 NUL octet in the message; nothing was sent");
    const row = (await p.rows()).findLast((r) => r.command === "DATA" && r.target?.startsWith(`<${token}`));
    expect(row).toMatchObject({ decision: "deny", reason: "NUL octet in the message" });
  });
});
