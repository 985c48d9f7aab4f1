/**
 * An upstream server that does not offer 8BITMIME (docs/smtp.md "Replay"): RFC 6152 §3 forbids sending it 8-bit
 * content, and a relay that does not convert must refuse. Mailgator never converts: a message holding an octet of
 * 0x80 or above gets `554 5.6.3` (RFC 3463: conversion required but not supported), and nothing of it goes upstream,
 * not even MAIL, whether the agent declared `BODY=8BITMIME` or not; a 7-bit message still goes. Against the real
 * Postfix's `smtp7bit` listener (docs/upstreams.md), which offers no 8BITMIME but would take 8-bit data anyway: what
 * it delivers is what Mailgator sent.
 */
import { expect, test } from "bun:test";
import { TcpRelay } from "../fixtures/tcp-relay.ts";
import type { TestProxy } from "./helpers.ts";
import {
  CORP_ONLY_RULES,
  dataPayload,
  loggedIn,
  marker,
  message,
  postfixLog,
  RawClient,
  sinkCopies,
  startTestProxy,
  upstreams,
  useTestProxy,
  waitForSink,
} from "./helpers.ts";

let proxy: TestProxy;
useTestProxy({ rules: CORP_ONLY_RULES, upstreamAddr: `${upstreams().host}:${upstreams().ports.smtp7bit}` }, (p) => {
  proxy = p;
});

const REFUSAL =
  "554 5.6.3 The upstream server does not accept 8-bit messages (it does not offer 8BITMIME, RFC 6152) and this " +
  "message holds 8-bit octets; nothing was sent; send it as 7-bit (base64 or quoted-printable)\r\n";

const ROW_REASON =
  "not sent (nothing went upstream): the upstream server does not accept 8-bit messages (it does not offer " +
  "8BITMIME, RFC 6152) and this message holds 8-bit octets";

/** EHLO keywords of a Postfix listener, read directly. */
async function keywords(port: number): Promise<string[]> {
  const c = await RawClient.connect(port);
  await c.reply();
  const r = await c.command("EHLO client.test");
  await c.command("QUIT");
  c.close();
  return r.lines.slice(1).map((l) => l.split(" ")[0]!.toUpperCase());
}

/** One message from alice to `to` in `c`, with `mail` as the MAIL line and `body` as its body; the final reply. */
async function send(c: RawClient, mail: string, to: string, headers: Record<string, string>, body: Buffer | string) {
  expect((await c.command(mail)).code).toBe(250);
  expect((await c.command(`RCPT TO:<${to}>`)).code).toBe(250);
  expect((await c.command("DATA")).code).toBe(354);
  const head = Buffer.from(message(headers, ""), "latin1");
  c.write(Buffer.concat([head, typeof body === "string" ? Buffer.from(body, "latin1") : body]));
  c.write(".\r\n");
  return (await c.reply()).raw;
}

/** Audit rows of the message whose Message-ID is `<m@mailgator.test>`, as [command, decision, reason]. */
async function rowsOf(m: string): Promise<string[][]> {
  return (await proxy.rows())
    .filter((r) => r.target === `<${m}@mailgator.test>`)
    .map((r) => [r.command, r.decision, r.reason ?? ""]);
}

test("the smtp7bit listener offers no 8BITMIME; the smtp one does", async () => {
  const up = upstreams();
  expect(await keywords(up.ports.smtp)).toContain("8BITMIME");
  const without = await keywords(up.ports.smtp7bit);
  expect(without).not.toContain("8BITMIME");
  expect(without).toContain("STARTTLS");
});

for (const declared of [true, false]) {
  test(`8-bit content ${declared ? "declared BODY=8BITMIME" : "not declared"}: 554 5.6.3, nothing sent`, async () => {
    const m = marker();
    const to = `eight-${m}@corp.test`;
    const c = await loggedIn(proxy.port);
    const mail = `MAIL FROM:<alice@mailgator.test>${declared ? " BODY=8BITMIME" : ""}`;
    const headers = {
      From: "alice@mailgator.test",
      To: to,
      Subject: `8-bit ${m}`,
      "Message-ID": `<${m}@mailgator.test>`,
    };
    const final = await send(c, mail, to, headers, Buffer.from(`Grüße ${m}\r\n`, "utf8"));
    expect(final).toBe(REFUSAL);

    // The session goes on, and its next message, 7-bit, is delivered.
    const n = marker();
    const seven = { From: "alice@mailgator.test", To: `seven-${n}@corp.test`, Subject: `7-bit ${n}` };
    expect(await send(c, "MAIL FROM:<alice@mailgator.test>", `seven-${n}@corp.test`, seven, `Hello ${n}\r\n`)).toMatch(
      /^250 /,
    );
    await c.command("QUIT");
    c.close();
    await waitForSink(n, 1);
    // Delivered after the refused one: the refused one would be there by now had it gone.
    expect(sinkCopies(m)).toEqual([]);
    expect(postfixLog()).not.toContain(m);

    // The rules allowed it; the row after them says it was not sent, and never that the upstream replied.
    expect(await rowsOf(m)).toEqual([
      ["DATA", "allow", "every recipient allowed"],
      ["DATA", "deny", ROW_REASON],
    ]);
  });
}

test("8-bit octets in the header only (a raw UTF-8 Subject): refused the same way", async () => {
  const m = marker();
  const to = `head-${m}@corp.test`;
  const c = await loggedIn(proxy.port);
  expect((await c.command("MAIL FROM:<alice@mailgator.test> BODY=8BITMIME")).code).toBe(250);
  expect((await c.command(`RCPT TO:<${to}>`)).code).toBe(250);
  expect((await c.command("DATA")).code).toBe(354);
  const text = message(
    { From: "alice@mailgator.test", To: to, Subject: `Überweisung ${m}`, "Message-ID": `<${m}@mailgator.test>` },
    `plain ${m}\n`,
  );
  c.write(Buffer.from(dataPayload(text), "utf8"));
  expect((await c.reply()).raw).toBe(REFUSAL);
  await c.command("QUIT");
  c.close();
  const n = marker();
  const b = await loggedIn(proxy.port);
  const seven = { From: "alice@mailgator.test", To: `after-${n}@corp.test`, Subject: `after ${n}` };
  expect(await send(b, "MAIL FROM:<alice@mailgator.test>", `after-${n}@corp.test`, seven, "hi\r\n")).toMatch(/^250 /);
  b.close();
  await waitForSink(n, 1);
  expect(sinkCopies(m)).toEqual([]);
  expect(postfixLog()).not.toContain(m);
});

test("a 7-bit message, even declared BODY=8BITMIME, is delivered", async () => {
  const m = marker();
  const to = `seven-${m}@corp.test`;
  const c = await loggedIn(proxy.port);
  const headers = {
    From: "alice@mailgator.test",
    To: to,
    Subject: `7-bit ${m}`,
    "Message-ID": `<${m}@mailgator.test>`,
  };
  const final = await send(c, "MAIL FROM:<alice@mailgator.test> BODY=8BITMIME", to, headers, `Hello ${m}\r\n`);
  expect(final).toMatch(/^250 /);
  await c.command("QUIT");
  c.close();
  const copies = await waitForSink(m, 1);
  expect(copies.map((x) => x.recipient)).toEqual([to]);
  const rows = await rowsOf(m);
  expect(rows[0]).toEqual(["DATA", "allow", "every recipient allowed"]);
  expect(rows[1]?.[0]).toBe("DATA");
  expect(rows[1]?.[1]).toBe("allow");
  expect(rows[1]?.[2]).toStartWith("upstream replied 250 ");
});

/**
 * A proxy whose upstream is Postfix's listener on `port`, in clear through a relay that keeps every octet Mailgator
 * writes there (`written()`).
 */
async function recordedUpstream(
  port: number,
): Promise<{ wire: TestProxy; written: () => string; close(): Promise<void> }> {
  let written = "";
  const relay = await TcpRelay.start({ host: upstreams().host, port }, () => ({
    fromClient: (chunk, link) => {
      written += chunk.toString("latin1");
      link.target.write(chunk);
    },
  }));
  const wire = await startTestProxy({
    rules: CORP_ONLY_RULES,
    upstreamAddr: `127.0.0.1:${relay.port}`,
    upstreamTls: "none",
  });
  return {
    wire,
    written: () => written,
    close: async () => {
      await wire.close();
      await relay.close();
    },
  };
}

test("on the wire: the 8-bit message sends no MAIL at all; the 7-bit one goes without BODY=", async () => {
  const recorded = await recordedUpstream(upstreams().ports.smtp7bit);
  const { wire } = recorded;
  try {
    const m = marker();
    const c = await loggedIn(wire.port);
    const eight = { From: "alice@mailgator.test", To: `w8-${m}@corp.test`, Subject: `8-bit ${m}` };
    const body = Buffer.from(`Grüße ${m}\r\n`, "utf8");
    expect(await send(c, "MAIL FROM:<alice@mailgator.test> BODY=8BITMIME", `w8-${m}@corp.test`, eight, body)).toBe(
      REFUSAL,
    );
    expect(recorded.written()).toContain("AUTH PLAIN");
    expect(recorded.written()).not.toContain("MAIL FROM");
    expect(recorded.written()).not.toContain(m);
    const seven = { From: "alice@mailgator.test", To: `w7-${m}@corp.test`, Subject: `7-bit ${m}` };
    const final = await send(c, "MAIL FROM:<alice@mailgator.test> BODY=8BITMIME", `w7-${m}@corp.test`, seven, "hi\r\n");
    expect(final).toMatch(/^250 /);
    c.close();
    expect(recorded.written().match(/^MAIL FROM:.*$/gm)).toEqual([
      `MAIL FROM:<alice@mailgator.test> SIZE=${sizeOf(seven)}`,
    ]);
    expect(recorded.written()).not.toContain("BODY=");
    expect(recorded.written()).not.toContain(`w8-${m}`);
  } finally {
    await recorded.close();
  }
});

/** The size of the 7-bit message `send` writes with `headers` and the body "hi". */
function sizeOf(headers: Record<string, string>): number {
  return Buffer.from(message(headers, ""), "latin1").length + 4;
}

test("to an upstream offering 8BITMIME, 8-bit content goes with BODY=8BITMIME, declared or not", async () => {
  // RFC 6152 §3: 8-bit content is sent with BODY=8BITMIME. Through a relay to Postfix's usual listener (it offers it).
  const recorded = await recordedUpstream(upstreams().ports.smtp);
  const { wire } = recorded;
  try {
    const m = marker();
    const c = await loggedIn(wire.port);
    const eight = { From: "alice@mailgator.test", To: `u8-${m}@corp.test`, Subject: `8-bit ${m}` };
    const body = Buffer.from(`Grüße ${m}\r\n`, "utf8");
    expect(await send(c, "MAIL FROM:<alice@mailgator.test>", `u8-${m}@corp.test`, eight, body)).toMatch(/^250 /);
    const seven = { From: "alice@mailgator.test", To: `u7-${m}@corp.test`, Subject: `7-bit ${m}` };
    expect(await send(c, "MAIL FROM:<alice@mailgator.test>", `u7-${m}@corp.test`, seven, "hi\r\n")).toMatch(/^250 /);
    c.close();
    const mails = recorded.written().match(/^MAIL FROM:.*$/gm) ?? [];
    expect(mails.length).toBe(2);
    expect(mails[0]).toEndWith(" BODY=8BITMIME");
    expect(mails[1]).not.toContain("BODY=");
    expect((await waitForSink(m, 2)).map((x) => x.recipient).sort()).toEqual([
      `u7-${m}@corp.test`,
      `u8-${m}@corp.test`,
    ]);
  } finally {
    await recorded.close();
  }
});

test("the refusal is not charged to the quotas: nothing went anywhere (docs/quotas.md)", async () => {
  // Refused before the charge, as the message's other refusals are: with one send an hour, two 8-bit messages
  // refused leave it for a 7-bit one, and only then is the quota used.
  const charged = await startTestProxy({
    rules: `${CORP_ONLY_RULES}\n[[quotas]]\nname = "one"\nsends_per_hour = 1\n`,
    approvals: true,
    upstreamAddr: `${upstreams().host}:${upstreams().ports.smtp7bit}`,
  });
  try {
    const m = marker();
    const c = await loggedIn(charged.port);
    for (const i of [1, 2]) {
      const to = `q${i}-${m}@corp.test`;
      const headers = { From: "alice@mailgator.test", To: to, Subject: `8-bit ${i} ${m}` };
      expect(await send(c, "MAIL FROM:<alice@mailgator.test>", to, headers, Buffer.from(`Grüße ${m}\r\n`))).toBe(
        REFUSAL,
      );
    }
    const n = marker();
    const seven = { From: "alice@mailgator.test", To: `q-${n}@corp.test`, Subject: `7-bit ${n}` };
    expect(await send(c, "MAIL FROM:<alice@mailgator.test>", `q-${n}@corp.test`, seven, "hi\r\n")).toMatch(/^250 /);
    const over = { From: "alice@mailgator.test", To: `over-${n}@corp.test`, Subject: `over ${n}` };
    expect(await send(c, "MAIL FROM:<alice@mailgator.test>", `over-${n}@corp.test`, over, "hi\r\n")).toStartWith(
      '452 4.7.1 Quota "one" exceeded: sends_per_hour 1 (used 1)',
    );
    await c.command("QUIT");
    c.close();
    expect((await waitForSink(n, 1)).map((x) => x.recipient)).toEqual([`q-${n}@corp.test`]);
    expect(sinkCopies(m)).toEqual([]);
  } finally {
    await charged.close();
  }
});
