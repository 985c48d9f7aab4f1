/**
 * MAIL FROM must be one of the session's identities, or `<>` (docs/smtp.md "Identities", docs/protocol.md §6): the
 * upstream login when it is an address, plus `[smtp] identities` (pass-through) or the account's `identities`
 * (vault). Against the real Postfix: a refused sender leaves no trace there (barrier, sink, Postfix's log), an
 * accepted one is delivered with the reverse path as the agent wrote it.
 */

import { describe, expect, test } from "bun:test";
import { generateToken } from "../../src/vault/token.ts";
import {
  CORP_ONLY_RULES,
  dataPayload,
  loggedIn,
  marker,
  message,
  postfixLog,
  type RawClient,
  sinkCopies,
  type TestProxy,
  upstreams,
  useTestProxy,
  vaultClient,
  vaultConfig,
  waitForSink,
} from "./helpers.ts";

let plain: TestProxy;
useTestProxy({ rules: CORP_ONLY_RULES }, (proxy) => (plain = proxy));

let withIdentities: TestProxy;
useTestProxy(
  { rules: CORP_ONLY_RULES, smtp: `identities = ["Sales-Team@Corp.test"]` },
  (proxy) => (withIdentities = proxy),
);

const TOKEN = generateToken();
let vault: TestProxy;
useTestProxy(
  { rules: vaultConfig(CORP_ONLY_RULES, TOKEN, `identities = ["bot-desk@corp.test"]`) },
  (proxy) => (vault = proxy),
);

/** Send rules with `from` conditions: the login and desk@ may send to corp.test, ceo@ (an identity too) may not. */
const DESK_RULES = `
[[rules]]
name = "desk"
action = "allow"
operations = ["send"]
from = ["desk@corp.test", "alice@mailgator.test"]
to = "*@corp.test"

[[rules]]
name = "nothing else"
action = "deny"
`;
let deskOnly: TestProxy;
useTestProxy(
  { rules: DESK_RULES, smtp: `identities = ["desk@corp.test", "ceo@corp.test"]` },
  (proxy) => (deskOnly = proxy),
);

const REFUSED = "is not one of this account's identities";

/** One whole transaction from `sender` to `ok-<m>@corp.test` on an open session; returns the final reply. */
async function send(c: RawClient, sender: string, m: string): Promise<string> {
  expect((await c.command(`MAIL FROM:<${sender}>`)).code).toBe(250);
  expect((await c.command(`RCPT TO:<ok-${m}@corp.test>`)).code).toBe(250);
  expect((await c.command("DATA")).code).toBe(354);
  c.write(dataPayload(message({ Subject: `identity ${m}`, To: `ok-${m}@corp.test` }, `from ${sender} ${m}`)));
  return (await c.reply()).raw;
}

/** Postfix's stored copy names the envelope sender in Return-Path. */
function returnPath(text: string): string | undefined {
  return /^Return-Path: (.*)$/m.exec(text)?.[1];
}

/**
 * After a refusal on `c`: the session goes on and delivers an allowed message from the login (the barrier); once
 * it is in the sink, nothing with `m` is, and Postfix never logged `needle`.
 */
async function nothingReachedPostfix(c: RawClient, login: string, m: string, needle: string): Promise<void> {
  const barrier = marker();
  expect(await send(c, login, barrier)).toStartWith("250");
  await waitForSink(barrier, 1);
  expect(sinkCopies(m)).toEqual([]);
  expect(postfixLog()).not.toContain(needle);
}

describe("pass-through, no identities configured: the login is the only one", () => {
  test("a foreign sender gets 553 5.7.1, no transaction, nothing reaches Postfix, refusal audited", async () => {
    const m = marker();
    const sender = `me-${m}@corp.test`; // the rules (to *@corp.test, no sender named) would let it send
    const c = await loggedIn(plain.port);
    const r = await c.command(`MAIL FROM:<${sender}>`);
    expect(r.raw).toBe(`553 5.7.1 Sender <${sender}> ${REFUSED}\r\n`);
    expect((await c.command(`RCPT TO:<ok-${m}@corp.test>`)).raw).toStartWith("503 5.5.1");
    expect((await c.command("DATA")).raw).toStartWith("503 5.5.1");
    // Pipelined the same way (one write): the RCPT and DATA of the refused transaction still find none.
    c.write(`MAIL FROM:<${sender}> BODY=8BITMIME\r\nRCPT TO:<ok-${m}@corp.test>\r\nDATA\r\n`);
    expect((await c.reply()).raw).toStartWith("553 5.7.1");
    expect((await c.reply()).raw).toStartWith("503 5.5.1");
    expect((await c.reply()).raw).toStartWith("503 5.5.1");
    expect((await c.command("NOOP")).code).toBe(250);
    await nothingReachedPostfix(c, "alice@mailgator.test", m, sender);
    c.close();

    const rows = (await plain.rows()).filter((row) => row.command === "MAIL FROM" && row.target === sender);
    expect(rows).toHaveLength(2);
    for (const row of rows) {
      expect(row).toMatchObject({
        protocol: "smtp",
        operation: "mail:send",
        decision: "deny",
        rule: null,
        ruleIndex: null,
        agent: "alice@mailgator.test",
      });
      expect(row.reason).toBe("sender is not one of this account's identities (alice@mailgator.test)");
    }
  });

  test("another user's address is not an identity of this login", async () => {
    const bob = upstreams().users[1]!.address;
    const c = await loggedIn(plain.port);
    expect((await c.command(`MAIL FROM:<${bob}>`)).raw).toStartWith(`553 5.7.1 Sender <${bob}> ${REFUSED}`);
    c.close();
  });

  test("a case variant of the login is accepted and goes upstream as written", async () => {
    const m = marker();
    const c = await loggedIn(plain.port);
    expect(await send(c, "ALICE@Mailgator.TEST", m)).toStartWith("250");
    c.close();
    const [copy] = await waitForSink(m, 1);
    expect(returnPath(copy!.text)).toBe("<ALICE@Mailgator.TEST>");
  });

  test("<> is still accepted (the rules decide) and delivered", async () => {
    const m = marker();
    const c = await loggedIn(plain.port);
    // With <> the message names its author (an identity): the upstream would write From: MAILER-DAEMON otherwise
    // (tests/smtp/null-sender-author.test.ts).
    expect((await c.command("MAIL FROM:<>")).code).toBe(250);
    expect((await c.command(`RCPT TO:<ok-${m}@corp.test>`)).code).toBe(250);
    expect((await c.command("DATA")).code).toBe(354);
    const headers = { From: "alice@mailgator.test", Subject: `identity ${m}`, To: `ok-${m}@corp.test` };
    c.write(dataPayload(message(headers, `from <> ${m}`)));
    expect((await c.reply()).raw).toStartWith("250");
    c.close();
    const [copy] = await waitForSink(m, 1);
    expect(returnPath(copy!.text)).toBe("<>");
    const rows = (await plain.rows()).filter((row) => row.command === "MAIL FROM" && row.target === "<>");
    expect(rows.some((row) => row.decision === "allow")).toBe(true);
  });
});

describe("pass-through with [smtp] identities", () => {
  test("a configured identity is accepted in any case and delivered; the login still is one", async () => {
    const m = marker();
    const c = await loggedIn(withIdentities.port);
    expect(await send(c, "sales-team@corp.test", m)).toStartWith("250");
    const [copy] = await waitForSink(m, 1);
    expect(returnPath(copy!.text)).toBe("<sales-team@corp.test>");
    const m2 = marker();
    expect(await send(c, "alice@mailgator.test", m2)).toStartWith("250");
    await waitForSink(m2, 1);
    c.close();
  });

  test("identities are exact addresses: a neighbour of one is refused", async () => {
    const m = marker();
    const c = await loggedIn(withIdentities.port);
    for (const sender of [`sales-team-${m}@corp.test`, `sales-team@corp.test.${m}.test`, `sales-team@sub.corp.test`]) {
      expect((await c.command(`MAIL FROM:<${sender}>`)).raw, sender).toStartWith(
        `553 5.7.1 Sender <${sender}> ${REFUSED}`,
      );
    }
    await nothingReachedPostfix(c, "alice@mailgator.test", m, `sales-team-${m}`);
    c.close();
    const row = (await withIdentities.rows()).find(
      (r) => r.command === "MAIL FROM" && r.target === `sales-team-${m}@corp.test`,
    );
    expect(row?.reason).toBe(
      "sender is not one of this account's identities (alice@mailgator.test, sales-team@corp.test)",
    );
  });
});

describe("vault mode: the account's username and identities", () => {
  test("the account's identity and its username are delivered; a foreign sender is refused and audited", async () => {
    const m = marker();
    const c = await vaultClient(vault.port, TOKEN);
    expect(await send(c, "Bot-Desk@corp.test", m)).toStartWith("250");
    const [copy] = await waitForSink(m, 1);
    expect(returnPath(copy!.text)).toBe("<Bot-Desk@corp.test>");
    const m2 = marker();
    expect(await send(c, upstreams().users[0]!.address, m2)).toStartWith("250");
    await waitForSink(m2, 1);

    const m3 = marker();
    const foreign = `ceo-${m3}@corp.test`;
    expect((await c.command(`MAIL FROM:<${foreign}>`)).raw).toStartWith(`553 5.7.1 Sender <${foreign}> ${REFUSED}`);
    await nothingReachedPostfix(c, "bot-desk@corp.test", m3, foreign);
    c.close();
    const row = (await vault.rows()).find((r) => r.command === "MAIL FROM" && r.target === foreign);
    expect(row).toMatchObject({ agent: "bot", operation: "mail:send", decision: "deny", rule: null });
    expect(row!.reason).toBe(
      "sender is not one of this account's identities (alice@mailgator.test, bot-desk@corp.test)",
    );
  });
});

describe("§7 case 37: the originator headers (From, Sender, Reply-To, Resent-*) name identities only", () => {
  const HEADER_REFUSED =
    "554 5.7.1 The From, Sender, Reply-To or a related header names someone other than this account's identities; " +
    "nothing was sent\r\n";
  const UNREADABLE = "a From, Sender, Reply-To or related header cannot be read, names no address, or is doubled";
  /** Where answers, read receipts or error reports go besides Reply-To (docs/smtp.md "The author in the header"). */
  const ANSWER_FIELDS = [
    "Mail-Reply-To",
    "Mail-Followup-To",
    "Disposition-Notification-To",
    "Return-Receipt-To",
    "Errors-To",
    "X-Confirm-Reading-To",
    "Resent-Reply-To",
  ];

  /** One transaction from the login to `ok-<m>@corp.test` whose header section starts with `headers`. */
  async function sendWith(c: RawClient, login: string, m: string, headers: string): Promise<string> {
    expect((await c.command(`MAIL FROM:<${login}>`)).code).toBe(250);
    expect((await c.command(`RCPT TO:<ok-${m}@corp.test>`)).code).toBe(250);
    expect((await c.command("DATA")).code).toBe(354);
    c.write(dataPayload(`${headers}\r\nTo: ok-${m}@corp.test\r\nSubject: author ${m}\r\n\r\nbody ${m}\r\n`));
    return (await c.reply()).raw;
  }

  test("a foreign author is refused whole, in each originator field and however it is dressed", async () => {
    const login = "alice@mailgator.test";
    const c = await loggedIn(plain.port);
    const refused: string[] = [];
    for (const make of [
      (x: string) => `From: ${x}`,
      (x: string) => `From: "Alice" <alice@mailgator.test>, ${x}`,
      (x: string) => `From: =?utf-8?q?alice=40mailgator=2Etest?= <${x}>`,
      (x: string) => `From: Friends: ${x};`,
      (x: string) => `From: alice@mailgator.test\r\nSender: ${x}`,
      (x: string) => `From: alice@mailgator.test\r\nResent-From: ${x}`,
      (x: string) => `From: alice@mailgator.test\r\nResent-Sender: ${x}`,
      (x: string) => `From: alice@mailgator.test\r\nReply-To: ${x}`,
      (x: string) => `From: alice@mailgator.test\r\nReply-To: alice@mailgator.test, "Alice" <${x}>`,
    ]) {
      const m = marker();
      const foreign = `ceo-${m}@corp.test`;
      expect(await sendWith(c, login, m, make(foreign)), make(foreign)).toBe(HEADER_REFUSED);
      refused.push(m);
    }
    // Unreadable or doubled, or an address where a group's name goes (it would be dropped as a name): refused too.
    for (const headers of [
      "From: alice@mailgator.test\r\nFrom: alice@mailgator.test",
      "From: alice@mailgator.test\r\nSender: alice@mailgator.test\r\nSender: alice@mailgator.test",
      "From: <alice@mailgator.test",
      "From: CEO Bob <ceo@bank.test>:;",
      "From: <ceo@bank.test>:;",
      "From: ceo@bank.test:;",
      "From: alice@mailgator.test, CEO Bob <ceo@bank.test>:;",
      'From: alice@mailgator.test\r\nSender: "ceo@bank.test":;',
      "From: alice@mailgator.test\r\nReply-To: alice@mailgator.test\r\nReply-To: alice@mailgator.test",
      'From: "CEO Bob":;',
      "From: (ceo@bank.test)",
      "From: ",
      // An address where a display name or a route goes: some readers take it as the author.
      "From: ceo@bank.test <alice@mailgator.test>",
      "From: <@bank.test,ceo@bank.test:alice@mailgator.test>",
    ]) {
      const m = marker();
      expect(await sendWith(c, login, m, headers), headers).toBe(HEADER_REFUSED);
      refused.push(m);
    }
    await nothingReachedPostfix(c, login, refused[0]!, `ceo-${refused[0]}`);
    for (const m of refused) expect(sinkCopies(m)).toEqual([]);
    c.close();
    const rows = await plain.rows();
    const first = rows.filter((r) => r.command === "DATA" && r.reason?.includes(`ceo-${refused[0]}@corp.test`));
    expect(first).toHaveLength(1);
    expect(first[0]).toMatchObject({ operation: "mail:send", decision: "deny", rule: null, count: 1 });
    expect(first[0]!.reason).toBe(
      `refused as a whole: the header names <ceo-${refused[0]}@corp.test>, not one of this account's identities`,
    );
    const doubled = rows.filter((r) => r.command === "DATA" && r.reason?.endsWith(UNREADABLE));
    expect(doubled.length).toBeGreaterThanOrEqual(14);
  });

  test("the fields that send answers, receipts and reports elsewhere: a foreign address refused whole", async () => {
    const login = "alice@mailgator.test";
    const c = await loggedIn(plain.port);
    const refused: string[] = [];
    for (const field of ANSWER_FIELDS) {
      for (const make of [
        (x: string) => `${field}: ${x}`,
        (x: string) => `${field}: alice@mailgator.test, "Alice" <${x}>`,
        (x: string) => `${field}: Team: ${x};`,
      ]) {
        const m = marker();
        const foreign = `evil-${m}@evil.test`;
        const headers = `From: alice@mailgator.test\r\n${make(foreign)}`;
        expect(await sendWith(c, login, m, headers), headers).toBe(HEADER_REFUSED);
        refused.push(m);
      }
    }
    // Unreadable, naming no address, or doubled (but Resent-Reply-To, which repeats with its resent block).
    const unreadable: string[] = [];
    for (const field of ANSWER_FIELDS) {
      const values = [`${field}: <alice@mailgator.test`, `${field}: "Evil":;`, `${field}: (evil@evil.test)`];
      if (field !== "Resent-Reply-To") values.push(`${field}: alice@mailgator.test\r\n${field}: alice@mailgator.test`);
      for (const value of values) {
        const m = marker();
        const headers = `From: alice@mailgator.test\r\n${value}`;
        expect(await sendWith(c, login, m, headers), headers).toBe(HEADER_REFUSED);
        unreadable.push(m);
      }
    }
    await nothingReachedPostfix(c, login, refused[0]!, `evil-${refused[0]}`);
    for (const m of [...refused, ...unreadable]) expect(sinkCopies(m)).toEqual([]);
    const log = postfixLog();
    for (const m of refused) expect(log).not.toContain(`evil-${m}`);
    c.close();
    const rows = (await plain.rows()).filter((r) => r.command === "DATA" && r.decision === "deny");
    for (const m of refused) {
      const row = rows.find((r) => r.reason?.includes(`evil-${m}@evil.test`));
      expect(row?.reason, m).toBe(
        `refused as a whole: the header names <evil-${m}@evil.test>, not one of this account's identities`,
      );
    }
    const unread = rows.filter((r) => r.reason === `refused as a whole: ${UNREADABLE}`);
    expect(unread.length).toBeGreaterThanOrEqual(unreadable.length);
  });

  test("the list fields (RFC 2369): a foreign mailto address, or a value not read exactly, refused", async () => {
    const login = "alice@mailgator.test";
    const c = await loggedIn(plain.port);
    const refused: string[] = [];
    for (const field of [
      "List-Post",
      "List-Help",
      "List-Subscribe",
      "List-Unsubscribe",
      "List-Owner",
      "List-Archive",
    ]) {
      for (const make of [
        (x: string) => `${field}: <mailto:${x}>`,
        (x: string) => `${field}: <https://lists.corp.test/> (web), <MAILTO:alice@mailgator.test?cc=${x}>`,
        (x: string) => `${field}: <mailto:${x.replace("@", "%40")}?subject=hello>`,
      ]) {
        const m = marker();
        const headers = `From: alice@mailgator.test\r\n${make(`evil-${m}@evil.test`)}`;
        expect(await sendWith(c, login, m, headers), headers).toBe(HEADER_REFUSED);
        refused.push(m);
      }
    }
    for (const value of ["<mail to:evil@evil.test>", "mailto:evil@evil.test", "<mailto:evil@evil.test?reply-to=x@y>"]) {
      const m = marker();
      expect(await sendWith(c, login, m, `From: alice@mailgator.test\r\nList-Post: ${value}`), value).toBe(
        HEADER_REFUSED,
      );
      refused.push(m);
    }
    // The account's own address, web URLs and List-Post's NO are sent.
    const sent = marker();
    const own =
      "From: alice@mailgator.test\r\nList-Post: NO (announcements only)\r\n" +
      "List-Unsubscribe: <https://lists.corp.test/u>, <mailto:Alice@mailgator.test?subject=unsubscribe>";
    expect(await sendWith(c, login, sent, own)).toStartWith("250");
    await waitForSink(sent, 1);
    for (const m of refused) expect(sinkCopies(m)).toEqual([]);
    c.close();
    const rows = (await plain.rows()).filter((r) => r.command === "DATA" && r.decision === "deny");
    expect(rows.find((r) => r.reason?.includes(`evil-${refused[0]}@evil.test`))?.reason).toBe(
      `refused as a whole: the header names <evil-${refused[0]}@evil.test>, not one of this account's identities`,
    );
  });

  test("a mailto URL in a list field's comment (where Thunderbird's Reply List finds it) is refused", async () => {
    const login = "alice@mailgator.test";
    const c = await loggedIn(plain.port);
    for (const make of [
      (x: string) => `List-Post: <https://lists.corp.test/post> (<mailto:${x}>)`,
      (x: string) => `List-Post: NO (<mailto:${x}>)`,
      (x: string) => `List-Post: <https://lists.corp.test/post> (x =?us-ascii?Q?=3Cmailto:${x}=3E?=)`,
    ]) {
      const m = marker();
      const headers = `From: alice@mailgator.test\r\n${make(`evil-${m}@evil.test`)}`;
      expect(await sendWith(c, login, m, headers), headers).toBe(HEADER_REFUSED);
    }
    c.close();
  });

  test("the login, in any case and with a display name, and a message without any author, are delivered", async () => {
    const login = "alice@mailgator.test";
    const c = await loggedIn(plain.port);
    for (const headers of [
      'From: "Alice A." <ALICE@Mailgator.Test>',
      "From: alice@mailgator.test\r\nSender: Alice@mailgator.test\r\nResent-From: alice@mailgator.test",
      'From: alice@mailgator.test\r\nReply-To: "Alice, answers here" <ALICE@mailgator.test>',
      "X-No-Author: yes",
      // Each field that sends answers elsewhere, naming the login; Resent-Reply-To once per resent block.
      ...ANSWER_FIELDS.map((field) => `From: alice@mailgator.test\r\n${field}: "Alice" <Alice@mailgator.test>`),
      "From: alice@mailgator.test\r\nResent-Reply-To: alice@mailgator.test\r\nResent-Reply-To: ALICE@mailgator.test",
    ]) {
      const m = marker();
      expect(await sendWith(c, login, m, headers), headers).toStartWith("250");
      await waitForSink(m, 1);
    }
    c.close();
  });

  test("pass-through: a configured identity may be the author; vault: the account's identities, username", async () => {
    const m = marker();
    const c = await loggedIn(withIdentities.port);
    expect(await sendWith(c, "alice@mailgator.test", m, "From: Sales <sales-team@corp.test>")).toStartWith("250");
    await waitForSink(m, 1);
    const m2 = marker();
    expect(await sendWith(c, "alice@mailgator.test", m2, `From: bot-desk@corp.test`)).toBe(HEADER_REFUSED);
    const m2b = marker();
    const followup = "From: alice@mailgator.test\r\nMail-Followup-To: sales-team@corp.test";
    expect(await sendWith(c, "alice@mailgator.test", m2b, followup)).toStartWith("250");
    await waitForSink(m2b, 1);
    c.close();

    const v = await vaultClient(vault.port, TOKEN);
    const m3 = marker();
    expect(await sendWith(v, "bot-desk@corp.test", m3, "From: alice@mailgator.test")).toStartWith("250");
    await waitForSink(m3, 1);
    const m4 = marker();
    expect(await sendWith(v, "bot-desk@corp.test", m4, "From: sales-team@corp.test")).toBe(HEADER_REFUSED);
    await nothingReachedPostfix(v, "bot-desk@corp.test", m4, `author ${m4}`);
    expect(sinkCopies(m2)).toEqual([]);
    v.close();
    const row = (await vault.rows()).find((r) => r.command === "DATA" && r.reason?.includes("<sales-team@corp.test>"));
    expect(row).toMatchObject({ agent: "bot", decision: "deny" });
  });
});

describe("a `from` condition of the send rules judges the header's authors as it judges the envelope sender", () => {
  /** One transaction from `sender` to `ok-<m>@corp.test` whose header section starts with `headers`. */
  async function sendAs(c: RawClient, sender: string, m: string, headers: string): Promise<string> {
    expect((await c.command(`MAIL FROM:<${sender}>`)).code).toBe(250);
    expect((await c.command(`RCPT TO:<ok-${m}@corp.test>`)).code).toBe(250);
    expect((await c.command("DATA")).code).toBe(354);
    c.write(dataPayload(`${headers}\r\nTo: ok-${m}@corp.test\r\nSubject: rules ${m}\r\n\r\nbody ${m}\r\n`));
    return (await c.reply()).raw;
  }

  test("an author the rules refuse (From, Sender, Resent-From, Resent-Sender) refuses the message whole", async () => {
    const c = await loggedIn(deskOnly.port);
    // The rules refuse ceo@ in the envelope, although it is an identity...
    expect((await c.command("MAIL FROM:<ceo@corp.test>")).raw).toStartWith("553 5.7.1");
    // ...and in the header, whichever author field names it, as the rules refuse a recipient.
    const refused: string[] = [];
    for (const headers of [
      "From: ceo@corp.test",
      'From: "Desk" <desk@corp.test>, CEO <CEO@corp.test>',
      "From: desk@corp.test\r\nSender: ceo@corp.test",
      "From: desk@corp.test\r\nResent-From: ceo@corp.test",
      "From: desk@corp.test\r\nResent-Sender: ceo@corp.test",
    ]) {
      const m = marker();
      expect(await sendAs(c, "desk@corp.test", m, headers), headers).toBe(
        `554 5.7.1 Message refused: not allowed for <ok-${m}@corp.test>; nothing was sent\r\n`,
      );
      refused.push(m);
    }
    // Authors the rules allow, other than the envelope sender too, are delivered; the session went on.
    const m = marker();
    expect(
      await sendAs(c, "desk@corp.test", m, "From: Desk <DESK@corp.test>\r\nSender: alice@mailgator.test"),
    ).toStartWith("250");
    await waitForSink(m, 1);
    for (const r of refused) expect(sinkCopies(r)).toEqual([]);
    c.close();
    // The rows of a refusal by the rules at the end of DATA: the recipient's deny (the rule that decided, and for
    // which author), then the DATA deny.
    const rows = (await deskOnly.rows()).filter(
      (r) => r.target?.includes(refused[0]!) || r.reason?.includes(refused[0]!),
    );
    expect(rows.map((r) => [r.command, r.decision, r.rule])).toEqual([
      ["RCPT TO", "deny", "nothing else"],
      ["DATA", "deny", null],
    ]);
    expect(rows[0]!.reason).toStartWith("header author <ceo@corp.test>: ");
    expect(rows[1]!.reason).toBe(`refused as a whole: not allowed for ok-${refused[0]}@corp.test`);
  });
});
