/**
 * The fixed cuts of what a row quotes (src/audit/row.ts): a login name at MAX_ROW_LOGIN_NAME (IMAP and SMTP), a
 * Message-ID at MAX_ROW_MESSAGE_ID, each at the limit and one past it, against the real Dovecot and Postfix; and
 * `cutText`, which never leaves half of a surrogate pair.
 */

import { afterAll, beforeAll, expect, test } from "bun:test";
import { cutText, MAX_ROW_LOGIN_NAME, MAX_ROW_MESSAGE_ID } from "../../src/audit/row.ts";
import { RawImap, startTestProxy, statusOf, type TestProxy } from "../imap/helpers.ts";
import {
  CORP_ONLY_RULES,
  dataPayload,
  loggedIn,
  message,
  RawClient as SmtpClient,
  type TestProxy as SmtpProxy,
  startTestProxy as startSmtpProxy,
} from "../smtp/helpers.ts";

let imap: TestProxy;
let smtp: SmtpProxy;

beforeAll(async () => {
  imap = await startTestProxy({});
  smtp = await startSmtpProxy({ rules: CORP_ONLY_RULES });
});

afterAll(async () => {
  await imap?.close();
  await smtp?.close();
});

/** A name of `length` characters that no server knows, ending in a domain. */
const nameOf = (length: number): string => `${"n".repeat(length - "@x.test".length)}@x.test`;

test("the values are what docs/audit.md says", () => {
  expect(MAX_ROW_LOGIN_NAME).toBe(200);
  expect(MAX_ROW_MESSAGE_ID).toBe(256);
});

test("cutText: whole at the limit, cut one past it, never between the halves of a surrogate pair", () => {
  expect(cutText("abc", 3)).toBe("abc");
  expect(cutText("abcd", 3)).toBe("abc");
  // "ab" then U+1F600 (two UTF-16 units): a cut at 3 would keep its first half alone.
  expect(cutText("ab\u{1f600}", 4)).toBe("ab\u{1f600}");
  expect(cutText("ab\u{1f600}c", 3)).toBe("ab");
  expect(cutText("abc\u{1f600}", 3)).toBe("abc");
});

test("IMAP: a failed login's name is recorded whole at MAX_ROW_LOGIN_NAME, cut one character past it", async () => {
  for (const length of [MAX_ROW_LOGIN_NAME, MAX_ROW_LOGIN_NAME + 1]) {
    const raw = await RawImap.open(imap.port);
    try {
      const name = nameOf(length);
      expect(statusOf(await raw.command("a", `LOGIN "${name}" "wrong"`), "a")).toStartWith(
        "a NO [AUTHENTICATIONFAILED]",
      );
      const row = (await imap.rows()).filter((r) => r.reason.startsWith("login failed")).at(-1);
      expect(row?.target).toBe(name.slice(0, MAX_ROW_LOGIN_NAME));
    } finally {
      raw.close();
    }
  }
}, 60_000);

test("SMTP: a refused login's name is recorded whole at MAX_ROW_LOGIN_NAME, cut one character past it", async () => {
  for (const length of [MAX_ROW_LOGIN_NAME, MAX_ROW_LOGIN_NAME + 1]) {
    const c = await SmtpClient.connect(smtp.port);
    try {
      await c.reply();
      await c.command("EHLO client.test");
      const name = nameOf(length);
      const r = await c.command(`AUTH PLAIN ${Buffer.from(`\0${name}\0wrong`).toString("base64")}`);
      expect(r.code).toBe(535);
      const row = (await smtp.rows()).filter((r) => r.command === "AUTH").at(-1);
      expect(row?.decision).toBe("deny");
      expect(row?.target).toBe(name.slice(0, MAX_ROW_LOGIN_NAME));
    } finally {
      c.close();
    }
  }
}, 60_000);

test("SMTP: a sent message's Message-ID is its DATA row's target, whole at the limit, cut one past it", async () => {
  for (const length of [MAX_ROW_MESSAGE_ID, MAX_ROW_MESSAGE_ID + 1]) {
    const id = `<${"m".repeat(length - "<@corp.test>".length)}@corp.test>`;
    expect(id.length).toBe(length);
    const c = await loggedIn(smtp.port);
    try {
      expect((await c.command("MAIL FROM:<alice@mailgator.test>")).code).toBe(250);
      expect((await c.command("RCPT TO:<bob@corp.test>")).code).toBe(250);
      expect((await c.command("DATA")).code).toBe(354);
      const headers = { From: "alice@mailgator.test", To: "bob@corp.test", Subject: "cut", "Message-ID": id };
      c.write(dataPayload(message(headers, "hello")));
      expect((await c.reply()).code).toBe(250);
      const row = (await smtp.rows()).filter((r) => r.command === "DATA").at(-1);
      expect(row?.decision).toBe("allow");
      expect(row?.target).toBe(id.slice(0, MAX_ROW_MESSAGE_ID));
    } finally {
      c.close();
    }
  }
}, 60_000);
