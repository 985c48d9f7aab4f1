/**
 * docs/protocol.md §7 cases 28–35 against real Postfix through the proxy. Each test asserts what reached the
 * upstream server (the sink Maildir and Postfix's log), not only the replies. Every address carries a marker
 * unique to the test, so parallel tests never see each other's mail.
 *
 * "Nothing arrived" is proved with a barrier: after the refused transaction the same test sends an allowed
 * message and waits for it, then checks that no copy of the refused one exists and that Postfix never logged
 * its addresses.
 */

import { describe, expect, test } from "bun:test";
import { startFakeUpstream } from "./fake-upstream.ts";
import {
  barrier,
  CORP_ONLY_RULES,
  dataPayload,
  loggedIn,
  marker,
  message,
  nothingReachedUpstream,
  postfixLog,
  RawClient,
  sinkCopies,
  startTestProxy,
  type TestProxy,
  useTestProxy,
  waitForSink,
} from "./helpers.ts";

let p: TestProxy;
useTestProxy({ rules: CORP_ONLY_RULES }, (proxy) => (p = proxy));

describe("§7 case 28: an allowed and a denied recipient", () => {
  test("the denied RCPT gets 550 5.7.1, DATA fails, and no one receives the message", async () => {
    const m = marker();
    const c = await loggedIn(p.port);
    expect((await c.command("MAIL FROM:<alice@mailgator.test>")).code).toBe(250);
    expect((await c.command(`RCPT TO:<ok-${m}@corp.test>`)).raw).toStartWith("250 2.1.5");
    const evil = await c.command(`RCPT TO:<evil-${m}@x.test>`);
    expect(evil.raw).toStartWith("550 5.7.1");
    const data = await c.command("DATA");
    expect(data.raw).toStartWith("554 5.7.1");
    c.close();
    await nothingReachedUpstream(p.port, m);
    const rows = await p.rows();
    const denied = rows.find((r) => r.target === `evil-${m}@x.test`);
    expect(denied?.decision).toBe("deny");
    expect(denied?.command).toBe("RCPT TO");
    expect(denied?.rule).toBe("nothing else");
  });
});

describe("§7 case 29: address forms that route elsewhere", () => {
  test("source routes, quoted @, % hacks, trailing dots, literals and IDNA look-alikes are refused", async () => {
    const m = marker();
    const c = await loggedIn(p.port);
    expect((await c.command("MAIL FROM:<alice@mailgator.test>")).code).toBe(250);
    const forms = [
      `<@corp.test:evil-${m}@x.test>`,
      `<"ok-${m}@corp.test"@x.test>`,
      `<evil-${m}%x.test@corp.test>`,
      `<evil-${m}!x.test@corp.test>`,
      `<ok-${m}@corp.test.>`,
      `<ok-${m}@[127.0.0.1]>`,
    ];
    for (const form of forms) {
      const r = await c.command(`RCPT TO:${form}`);
      expect(r.code, form).toBe(553);
    }
    // "corр.test" with a Cyrillic "р" (U+0440), sent as UTF-8 bytes.
    c.write(Buffer.from(`RCPT TO:<ok-${m}@cor\u0440.test>\r\n`, "utf8"));
    const idn = await c.reply();
    expect(idn.raw).toStartWith("553 5.6.7");
    // The A-label form is plain ASCII: it is a different domain and the rule does not match it.
    expect((await c.command(`RCPT TO:<ok-${m}@xn--cor-q5d.test>`)).raw).toStartWith("550 5.7.1");
    expect((await c.command("DATA")).code).toBe(554);
    c.close();
    await nothingReachedUpstream(p.port, m);
  });
});

describe("§7 case 30: DSN parameters", () => {
  test("RET, ENVID, AUTH= on MAIL and NOTIFY, ORCPT on RCPT are refused and never forwarded", async () => {
    const m = marker();
    const c = await loggedIn(p.port);
    for (const param of ["RET=FULL", "ENVID=x", "AUTH=<>", "SMTPUTF8", "HOLDFOR=10", "BY=120;R", "XYZ=1"]) {
      const r = await c.command(`MAIL FROM:<evil-${m}@x.test> ${param}`);
      expect(r.raw, param).toStartWith("555 5.5.4");
    }
    // Without any parameter the reverse path alone is refused: a bounce would carry the message to it.
    expect((await c.command(`MAIL FROM:<evil-${m}@x.test>`)).raw).toStartWith("553 5.7.1");
    expect((await c.command(`RCPT TO:<ok-${m}@corp.test>`)).raw).toStartWith("503");
    expect((await c.command("MAIL FROM:<alice@mailgator.test>")).code).toBe(250);
    for (const param of ["NOTIFY=FAILURE", "NOTIFY=SUCCESS,FAILURE", `ORCPT=rfc822;evil-${m}@x.test`]) {
      const r = await c.command(`RCPT TO:<ok-${m}@corp.test> ${param}`);
      expect(r.raw, param).toStartWith("555 5.5.4");
    }
    expect((await c.command("DATA")).raw).toStartWith("554 5.5.4");
    c.close();
    await nothingReachedUpstream(p.port, m);
  });
});

describe("§7 case 31: SMTP smuggling", () => {
  for (const [name, sequence] of [
    ["<LF>.<LF>", "\n.\n"],
    ["<CR><LF>.<LF>", "\r\n.\n"],
    ["<LF>.<CR><LF>", "\n.\r\n"],
    ["<CR>.<CR>", "\r.\r"],
  ] as const) {
    test(`${name} followed by a second transaction is refused for a bare line end, and nothing is sent`, async () => {
      const m = marker();
      const c = await loggedIn(p.port);
      expect((await c.command("MAIL FROM:<alice@mailgator.test>")).code).toBe(250);
      expect((await c.command(`RCPT TO:<ok-${m}@corp.test>`)).code).toBe(250);
      expect((await c.command("DATA")).code).toBe(354);
      c.write(
        `Subject: ${m}\r\n\r\nfirst${sequence}MAIL FROM:<alice@mailgator.test>\r\n` +
          `RCPT TO:<evil-${m}@x.test>\r\nDATA\r\n\r\nsmuggled ${m}\r\n.\r\n`,
      );
      const r = await c.reply();
      expect(r.raw).toStartWith("521 5.5.2");
      await c.waitClosed();
      await nothingReachedUpstream(p.port, m);
    });
  }
});

describe("§7 case 32: one packet with MAIL, a denied RCPT, an allowed RCPT and DATA", () => {
  test("replies come in order, the denied recipient in its place, and the message is refused", async () => {
    const m = marker();
    const c = await loggedIn(p.port);
    c.write(
      `MAIL FROM:<alice@mailgator.test>\r\nRCPT TO:<evil-${m}@x.test>\r\n` +
        `RCPT TO:<ok-${m}@corp.test>\r\nDATA\r\nNOOP\r\n`,
    );
    const codes = [];
    for (let i = 0; i < 5; i++) codes.push((await c.reply()).code);
    expect(codes).toEqual([250, 550, 250, 554, 250]);
    // After the refusal the session goes on: a pipelined allowed transaction works.
    c.write(`MAIL FROM:<alice@mailgator.test>\r\nRCPT TO:<ok2-${m}@corp.test>\r\nDATA\r\n`);
    expect([(await c.reply()).code, (await c.reply()).code, (await c.reply()).code]).toEqual([250, 250, 354]);
    c.write(dataPayload(message({ Subject: `pipelined ${m}`, To: `ok2-${m}@corp.test` }, "hello")));
    expect((await c.reply()).code).toBe(250);
    c.close();
    const copies = await waitForSink(m, 1);
    await barrier(p.port);
    expect(sinkCopies(m).map((d) => d.recipient)).toEqual([`ok2-${m}@corp.test`]);
    expect(copies[0]!.recipient).toBe(`ok2-${m}@corp.test`);
    expect(postfixLog()).not.toContain(`evil-${m}`);
  });
});

describe("§7 case 33: reset, then the denied recipient again", () => {
  test("RSET, a new MAIL and a repeated EHLO each start over, and the recipient is still denied", async () => {
    const m = marker();
    const c = await loggedIn(p.port);
    expect((await c.command("MAIL FROM:<alice@mailgator.test>")).code).toBe(250);
    expect((await c.command(`RCPT TO:<ok-${m}@corp.test>`)).code).toBe(250);
    expect((await c.command("RSET")).code).toBe(250);
    expect((await c.command(`RCPT TO:<evil-${m}@x.test>`)).raw).toStartWith("503 5.5.1");
    expect((await c.command("MAIL FROM:<alice@mailgator.test>")).code).toBe(250);
    expect((await c.command(`RCPT TO:<evil-${m}@x.test>`)).raw).toStartWith("550 5.7.1");
    expect((await c.command("EHLO again.test")).code).toBe(250);
    expect((await c.command(`RCPT TO:<evil-${m}@x.test>`)).raw).toStartWith("503 5.5.1");
    expect((await c.command("MAIL FROM:<alice@mailgator.test>")).code).toBe(250);
    expect((await c.command(`RCPT TO:<ok-${m}@corp.test>`)).code).toBe(250);
    // A new MAIL forgets the approved recipient of the transaction it replaces.
    expect((await c.command("MAIL FROM:<alice@mailgator.test>")).code).toBe(250);
    expect((await c.command(`RCPT TO:<evil-${m}@x.test>`)).raw).toStartWith("550 5.7.1");
    expect((await c.command("DATA")).raw).toStartWith("554 5.7.1");
    c.close();
    await nothingReachedUpstream(p.port, m);
  });
});

describe("commands with what they do not take", () => {
  test("RSET, QUIT, DATA with a parameter, STARTTLS not offered: a row each; the session goes on", async () => {
    const m = marker();
    const c = await loggedIn(p.port);
    expect((await c.command("MAIL FROM:<alice@mailgator.test>")).code).toBe(250);
    expect((await c.command(`RCPT TO:<ok-${m}@corp.test>`)).code).toBe(250);
    const before = (await p.rows()).length;
    // RFC 5321 §4.1.1.4, §4.1.1.5 and §4.1.1.10: none takes a parameter; the transaction stands.
    expect((await c.command("RSET x")).raw).toStartWith("501 5.5.4 Syntax: RSET");
    expect((await c.command("QUIT now")).raw).toStartWith("501 5.5.4 Syntax: QUIT");
    expect((await c.command("DATA BODY=BINARYMIME")).raw).toStartWith("501 5.5.4 Syntax: DATA");
    // This listener has no TLS (RFC 3207 §4: STARTTLS only where the EHLO offered it).
    expect((await c.command("STARTTLS")).raw).toStartWith("502 5.5.1 STARTTLS is not offered");
    // Every refusal has its row (docs/audit.md); the parameter's text is not in it, only its length.
    const rows = (await p.rows()).slice(before).filter((r) => ["RSET", "QUIT", "DATA", "STARTTLS"].includes(r.command));
    expect(rows.map((r) => [r.command, r.decision, r.operation, r.target, r.reason])).toEqual([
      ["RSET", "deny", null, null, "RSET takes no parameters (one given, length 1)"],
      ["QUIT", "deny", null, null, "QUIT takes no parameters (one given, length 3)"],
      ["DATA", "deny", "mail:send", null, "DATA takes no parameters (one given, length 15)"],
      ["STARTTLS", "deny", null, null, "STARTTLS is not offered"],
    ]);
    expect((await c.command("NOOP anything")).code).toBe(250);
    const spaced = await c.command(`RCPT TO:< ceo-${m}@corp.test>`);
    expect(spaced.raw).toStartWith("553 5.1.3");
    expect(spaced.raw).toContain("spaces and control characters are not allowed in an address");
    expect((await c.command("RSET")).code).toBe(250);
    expect((await c.command("QUIT")).code).toBe(221);
    await nothingReachedUpstream(p.port, m);
  });
});

describe("§7 case 34: commands that are never forwarded", () => {
  test("BDAT, VRFY, EXPN, BURL, XCLIENT, ETRN get 502 and the upstream never sees them", async () => {
    const fake = await startFakeUpstream({ keepData: true });
    const proxy = await startTestProxy({
      rules: CORP_ONLY_RULES,
      upstreamTls: "none",
      upstreamAddr: `127.0.0.1:${fake.port}`,
    });
    try {
      const c = await RawClient.connect(proxy.port);
      await c.reply();
      const ehlo = await c.command("EHLO client.test");
      for (const absent of ["BURL", "CHUNKING", "XCLIENT", "ETRN", "VRFY", "EXPN", "SMTPUTF8", "DSN"]) {
        expect(ehlo.lines.some((l) => l.toUpperCase().startsWith(absent))).toBe(false);
      }
      expect((await c.command(`AUTH PLAIN ${Buffer.from("\0alice@mailgator.test\0p").toString("base64")}`)).code).toBe(
        235,
      );
      expect((await c.command("MAIL FROM:<alice@mailgator.test>")).code).toBe(250);
      expect((await c.command("RCPT TO:<ok@corp.test>")).code).toBe(250);
      for (const cmd of [
        "BDAT 10 LAST",
        "VRFY evil@x.test",
        "EXPN staff",
        "BURL imap://x/;UID=1 LAST",
        "XCLIENT ADDR=1.2.3.4",
        "ETRN corp.test",
      ]) {
        expect((await c.command(cmd)).raw, cmd).toStartWith("502 5.5.1");
      }
      expect((await c.command("DATA")).code).toBe(354);
      c.write(dataPayload(message({ Subject: "x", To: "ok@corp.test" }, "body")));
      expect((await c.reply()).code).toBe(250);
      c.close();
      const verbs = fake.lines.map((l) => l.split(" ")[0]!.toUpperCase()).filter((v) => v !== "QUIT");
      expect(verbs).toEqual(["EHLO", "AUTH", "MAIL", "RCPT", "DATA"]);
    } finally {
      await proxy.close();
      await fake.close();
    }
  });
});

describe("§7 case 35: a Bcc header without a matching RCPT", () => {
  test("delivers nothing to the address in the header", async () => {
    const m = marker();
    const c = await loggedIn(p.port);
    expect((await c.command("MAIL FROM:<alice@mailgator.test>")).code).toBe(250);
    expect((await c.command(`RCPT TO:<ok-${m}@corp.test>`)).code).toBe(250);
    expect((await c.command("DATA")).code).toBe(354);
    c.write(dataPayload(message({ Subject: `bcc ${m}`, To: `ok-${m}@corp.test`, Bcc: `evil-${m}@x.test` }, "hello")));
    expect((await c.reply()).code).toBe(250);
    c.close();
    await waitForSink(m, 1);
    await barrier(p.port);
    const copies = sinkCopies(m);
    expect(copies.map((d) => d.recipient)).toEqual([`ok-${m}@corp.test`]);
    expect(postfixLog()).not.toContain(`to=<evil-${m}@x.test>`);
  });
});

describe("refusals that need no rule have their row (docs/audit.md)", () => {
  test("commands not offered or unknown, MAIL and RCPT refused for syntax or parameters: a deny row each", async () => {
    const m = marker();
    const before = (await p.rows()).length;
    const c = await loggedIn(p.port);
    const sent: [string, number][] = [
      [`MAIL FROM:<alice@mailgator.test> RET=FULL ENVID=x${m}`, 555],
      [`MAIL FROM:<alice@mailgator.test> AUTH=<ceo-${m}@bank.test>`, 555],
      ["VRFY postmaster", 502],
      ["EXPN staff", 502],
      ["BDAT 10 LAST", 502],
      ["XCLIENT ADDR=1.2.3.4", 502],
      ["SECRETCOMMAND dGVzdDp0ZXN0", 500],
      ["MAIL FROM:<alice@mailgator.test>", 250],
      [`RCPT TO:<ok-${m}@corp.test> NOTIFY=SUCCESS ORCPT=rfc822;spy-${m}@x.test`, 555],
      [`RCPT TO:<@evil.test:ok-${m}@corp.test>`, 553],
      [`RCPT TO:<ok-${m}%evil.test@corp.test>`, 553],
    ];
    for (const [line, code] of sent) expect((await c.command(line)).code, line).toBe(code);
    await c.command("QUIT");
    c.close();
    const rows = (await p.rows()).slice(before).filter((r) => r.decision === "deny");
    expect(rows.map((r) => r.command)).toEqual([
      "MAIL FROM",
      "MAIL FROM",
      "VRFY",
      "EXPN",
      "BDAT",
      "XCLIENT",
      "(command)",
      "RCPT TO",
      "RCPT TO",
      "RCPT TO",
    ]);
    expect(rows[0]!.reason).toBe("MAIL parameter RET is not accepted");
    expect(rows[1]!.reason).toBe("MAIL parameter AUTH is not accepted");
    expect(rows[2]!.reason).toBe("VRFY is not offered");
    // An unknown line is not kept (it could be a secret sent out of turn): only its length.
    expect(rows[6]).toMatchObject({ target: null, reason: "unrecognized command (26 characters)" });
    expect(JSON.stringify(rows)).not.toContain("dGVzdDp0ZXN0");
    expect(rows[7]!.reason).toBe("RCPT parameter NOTIFY is not accepted");
    expect(rows[8]!.target).toBe(`<@evil.test:ok-${m}@corp.test>`);
    for (const r of rows.slice(7)) expect(r.operation).toBe("mail:send");
  });

  test("a credential sent out of turn in a transaction reaches neither a row nor the DATA reply", async () => {
    const m = marker();
    const secret = Buffer.from(`\0alice\0hunter2-${m}`).toString("base64");
    const c = await loggedIn(p.port);
    expect((await c.command("MAIL FROM:<alice@mailgator.test>")).code).toBe(250);
    expect((await c.command(`RCPT TO:<ok-${m}@corp.test>`)).code).toBe(250);
    expect((await c.command("AUTH PLAIN")).code).toBe(503);
    expect((await c.command(secret)).code).toBe(500);
    const data = await c.command("DATA");
    expect(data.raw).toStartWith("554 5.5.4");
    expect(data.raw).toContain(`an unrecognized command of ${secret.length} characters`);
    expect(data.raw).not.toContain(secret.slice(0, 12));
    c.close();
    const rows = JSON.stringify(await p.rows());
    expect(rows).not.toContain(secret.slice(0, 12));
    expect(rows).toContain(`unrecognized command (${secret.length} characters)`);
  });

  test("MAIL before login, and a command line with a bare LF: a row each", async () => {
    const before = (await p.rows()).length;
    const c = await RawClient.connect(p.port);
    await c.reply();
    await c.command("EHLO client.test");
    expect((await c.command("MAIL FROM:<alice@mailgator.test>")).code).toBe(530);
    c.write("NOOP\nNOOP\r\n");
    expect((await c.reply()).code).toBe(521);
    c.close();
    const rows = (await p.rows()).slice(before).filter((r) => r.decision === "deny");
    expect(rows.map((r) => [r.command, r.reason])).toEqual([
      ["MAIL FROM", "not logged in"],
      ["(command)", "bare CR or LF in a command line; connection closed"],
    ]);
  });
});
