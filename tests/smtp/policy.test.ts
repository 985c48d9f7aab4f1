/**
 * Content rules at the end of DATA (docs/smtp.md "Send semantics"): cc / bcc classing of each envelope recipient,
 * subject, has_attachment; all or nothing; nothing reaches the upstream when any recipient is refused.
 * A fake upstream records what arrives, so each refusal is checked at the server side too.
 */

import { afterEach, describe, expect, test } from "bun:test";
import { compilePolicy } from "../../src/policy/index.ts";
import { startSmtpProxy } from "../../src/smtp/index.ts";
import { type FakeUpstream, startFakeUpstream } from "./fake-upstream.ts";
import { dataPayload, RawClient, startTestProxy, type TestProxy } from "./helpers.ts";

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const f of cleanups.splice(0).reverse()) await f();
});

async function setup(rules: string): Promise<{ p: TestProxy; fake: FakeUpstream }> {
  const fake = await startFakeUpstream({ keepData: true });
  cleanups.push(() => fake.close());
  const p = await startTestProxy({ rules, upstreamTls: "none", upstreamAddr: `127.0.0.1:${fake.port}` });
  cleanups.push(() => p.close());
  return { p, fake };
}

/** One transaction; returns the RCPT codes and the final reply. */
async function send(port: number, rcpts: string[], text: string): Promise<{ rcpt: number[]; final: string }> {
  const c = await RawClient.connect(port);
  await c.reply();
  await c.command("EHLO client.test");
  await c.command(`AUTH PLAIN ${Buffer.from("\0alice@mailgator.test\0p").toString("base64")}`);
  expect((await c.command("MAIL FROM:<alice@mailgator.test>")).code).toBe(250);
  const rcpt: number[] = [];
  for (const r of rcpts) rcpt.push((await c.command(`RCPT TO:<${r}>`)).code);
  const data = await c.command("DATA");
  if (data.code !== 354) {
    c.close();
    return { rcpt, final: data.raw };
  }
  c.write(dataPayload(text.replace(/\r?\n/g, "\r\n")));
  const final = (await c.reply()).raw;
  c.close();
  return { rcpt, final };
}

const sent = (fake: FakeUpstream) => fake.lines.filter((l) => /^(MAIL|RCPT|DATA)/.test(l));

describe("cc and bcc", () => {
  const RULES = `
[[rules]]
name = "no blind copies"
action = "deny"
bcc = "*"

[[rules]]
name = "corp"
action = "allow"
to = "*@corp.test"
`;

  test("a recipient in neither To nor Cc is a bcc recipient: the message is refused, nothing sent", async () => {
    const { p, fake } = await setup(RULES);
    const r = await send(p.port, ["a@corp.test", "hidden@corp.test"], "To: a@corp.test\nSubject: s\n\nhi\n");
    // At RCPT time the headers are unknown: both are accepted provisionally.
    expect(r.rcpt).toEqual([250, 250]);
    expect(r.final).toStartWith("554 5.7.1");
    expect(r.final).toContain("hidden@corp.test");
    expect(sent(fake)).toEqual([]);
    const rows = await p.rows();
    const hidden = rows.find((row) => row.command === "RCPT TO" && row.target === "hidden@corp.test");
    expect(hidden).toMatchObject({ decision: "deny", rule: "no blind copies", detail: { class: "bcc" } });
    expect(rows.find((row) => row.command === "RCPT TO" && row.target === "a@corp.test")).toMatchObject({
      decision: "allow",
      detail: { class: "to" },
    });
  });

  test("the same recipient named in Cc is allowed, the message goes out once with the approved envelope", async () => {
    const { p, fake } = await setup(RULES);
    const text = "To: a@corp.test\nCc: B@Corp.test\nSubject: s\n\nhi\n..dot\n";
    const r = await send(p.port, ["a@corp.test", "b@corp.test"], text);
    expect(r.final).toStartWith("250");
    expect(sent(fake)).toEqual([
      "MAIL FROM:<alice@mailgator.test> SIZE=59",
      "RCPT TO:<a@corp.test>",
      "RCPT TO:<b@corp.test>",
      "DATA",
    ]);
    // Re-stuffed on the way out: the upstream sees exactly what the client sent.
    expect(fake.messages[0]!.toString()).toBe(text.replace(/\n/g, "\r\n").replace("\r\n..dot", "\r\n...dot"));
  });

  test("a recipient given again, in another case, is one: its first spelling goes upstream once", async () => {
    const { p, fake } = await setup(RULES);
    const text = "To: a@corp.test\nSubject: s\n\nhi\n";
    const r = await send(p.port, ["a@corp.test", "A@Corp.TEST", "a@corp.test"], text);
    expect(r.rcpt).toEqual([250, 250, 250]);
    expect(r.final).toStartWith("250");
    expect(sent(fake)).toEqual(["MAIL FROM:<alice@mailgator.test> SIZE=35", "RCPT TO:<a@corp.test>", "DATA"]);
  });

  test("an unparseable To header leaves the class unknown, which a bcc rule resolves to deny", async () => {
    const { p, fake } = await setup(RULES);
    const r = await send(p.port, ["a@corp.test"], "To: <a@corp.test\nSubject: s\n\nhi\n");
    expect(r.final).toStartWith("554 5.7.1");
    expect(sent(fake)).toEqual([]);
  });
});

describe("subject and has_attachment", () => {
  const RULES = `
[[rules]]
name = "no password mail"
action = "deny"
subject = "*password*"

[[rules]]
name = "no attachments"
action = "deny"
has_attachment = true

[[rules]]
name = "corp"
action = "allow"
to = "*@corp.test"
`;

  test("an encoded subject is matched after decoding", async () => {
    const { p, fake } = await setup(RULES);
    const r = await send(
      p.port,
      ["a@corp.test"],
      "To: a@corp.test\nSubject: =?UTF-8?B?WW91ciBQYXNTd29yZCByZXNldA==?=\n\nhi\n",
    );
    expect(r.final).toStartWith("554 5.7.1");
    expect(sent(fake)).toEqual([]);
    expect((await p.rows()).find((row) => row.command === "RCPT TO")?.rule).toBe("no password mail");
  });

  test("an attachment is refused; text and html alternatives pass", async () => {
    const { p, fake } = await setup(RULES);
    const attached =
      `To: a@corp.test\nSubject: report\nContent-Type: multipart/mixed; boundary="b"\n\n` +
      `--b\nContent-Type: text/plain\n\nsee attached\n` +
      `--b\nContent-Type: application/pdf\nContent-Disposition: attachment; filename="r.pdf"\n\nJVBERi0=\n--b--\n`;
    expect((await send(p.port, ["a@corp.test"], attached)).final).toStartWith("554 5.7.1");
    expect(sent(fake)).toEqual([]);
    const alternative =
      `To: a@corp.test\nSubject: report\nContent-Type: multipart/alternative; boundary="b"\n\n` +
      `--b\nContent-Type: text/plain\n\nhi\n--b\nContent-Type: text/html\n\n<p>hi</p>\n--b--\n`;
    expect((await send(p.port, ["a@corp.test"], alternative)).final).toStartWith("250");
    expect(sent(fake).filter((l) => l.startsWith("MAIL"))).toHaveLength(1);
    const rows = await p.rows();
    expect(rows.find((row) => row.command === "DATA" && row.decision === "deny")?.detail).toMatchObject({
      hasAttachment: true,
    });
  });
});

describe("audit rows of an allowed send", () => {
  test("sender, each recipient, the message (size, Message-ID, no body) and the upstream result", async () => {
    const { p } = await setup(`[[rules]]\nname = "corp"\naction = "allow"\nto = "*@corp.test"\n`);
    const r = await send(
      p.port,
      ["a@corp.test", "b@corp.test"],
      "To: a@corp.test\nMessage-ID: <m1@corp.test>\nSubject: secret subject\n\nsecret body\n",
    );
    expect(r.final).toStartWith("250");
    const rows = (await p.rows()).filter((row) => row.command !== "AUTH");
    expect(rows.map((row) => [row.command, row.target, row.decision])).toEqual([
      ["MAIL FROM", "alice@mailgator.test", "allow"],
      ["RCPT TO", "a@corp.test", "allow"],
      ["RCPT TO", "b@corp.test", "allow"],
      ["DATA", "<m1@corp.test>", "allow"],
      ["DATA", "<m1@corp.test>", "allow"],
    ]);
    expect(rows[3]!.detail).toMatchObject({ size: 85, messageId: "<m1@corp.test>" });
    expect(rows[4]!.reason).toContain("upstream replied 250");
    expect(JSON.stringify(rows)).not.toContain("secret body");
    expect(rows.every((row) => row.protocol === "smtp" && row.configRevision === p.config.revision)).toBe(true);
  });
});

test("a config with an ask rule makes the SMTP proxy refuse to start", async () => {
  const p = await startTestProxy({ rules: `[[rules]]\nname = "corp"\naction = "allow"\nto = "*@corp.test"\n` });
  cleanups.push(() => p.close());
  const rules = [...p.config.rules, { name: "ask me", action: "ask" as const, operations: ["mail:send" as const] }];
  const config = { ...p.config, rules };
  await expect(startSmtpProxy({ config, policy: compilePolicy(rules), audit: p.audit })).rejects.toThrow(/ask/);
});
