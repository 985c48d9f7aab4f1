/**
 * Real clients through the proxy to real Postfix: nodemailer (what Node MCP mail servers use), Python's smtplib
 * and swaks with --pipeline. Allowed mail arrives with an identical body and exactly the approved envelope;
 * the postmark-mcp attack (a poisoned client quietly adding a BCC recipient) delivers nothing.
 */

import { expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import nodemailer from "nodemailer";
import { SPOOL_BLOCK } from "../../src/smtp/spool.ts";
import {
  bodyOf,
  CORP_ONLY_RULES,
  marker,
  postfixLog,
  sinkCopies,
  type TestProxy,
  upstreams,
  useTestProxy,
  waitForSink,
} from "./helpers.ts";

let p: TestProxy;
useTestProxy({ rules: CORP_ONLY_RULES }, (proxy) => (p = proxy));

/** A body with what breaks naive relays: leading dots, a lone dot line, 8-bit text, long lines. */
function trickyBody(m: string): string {
  const lines = [`hello ${m}`, ".", "..", ".leading dot", "ünïcödé €", "x".repeat(990), ""];
  for (let i = 0; i < 2000; i++) lines.push(`line ${i} ${i % 7 === 0 ? "." : ""}${"abcdefghij".repeat(6)}`);
  return `${lines.join("\n")}\n`;
}

/** Runs a client in a child process without blocking the proxy, which lives in this process. */
async function exec(cmd: string[]): Promise<{ exitCode: number; stdout: string; stderr: string }> {
  const child = Bun.spawn(cmd, { stdout: "pipe", stderr: "pipe", stdin: "ignore" });
  const [stdout, stderr, exitCode] = await Promise.all([
    new Response(child.stdout).text(),
    new Response(child.stderr).text(),
    child.exited,
  ]);
  return { exitCode, stdout, stderr };
}

function transport() {
  const user = upstreams().users[0]!;
  return nodemailer.createTransport({
    host: "127.0.0.1",
    port: p.port,
    secure: false,
    ignoreTLS: true,
    auth: { user: user.user, pass: user.password },
  });
}

test("nodemailer: allowed mail arrives with an identical body and the approved envelope", async () => {
  const m = marker();
  const body = trickyBody(m);
  // A raw message goes out byte for byte, so the delivered body can be compared exactly.
  const raw =
    `From: alice@mailgator.test\r\nTo: a-${m}@corp.test\r\nCc: b-${m}@corp.test\r\nSubject: nodemailer ${m}\r\n\r\n` +
    `${body.replace(/\n/g, "\r\n")}`;
  const info = await transport().sendMail({
    envelope: { from: "alice@mailgator.test", to: [`a-${m}@corp.test`, `b-${m}@corp.test`] },
    raw,
  });
  expect(info.accepted.sort()).toEqual([`a-${m}@corp.test`, `b-${m}@corp.test`]);
  const copies = await waitForSink(m, 2);
  expect(copies.map((c) => c.recipient).sort()).toEqual([`a-${m}@corp.test`, `b-${m}@corp.test`]);
  for (const copy of copies) {
    expect(copy.text).toContain("Return-Path: <alice@mailgator.test>");
    expect(Buffer.from(bodyOf(copy.text), "latin1").toString("utf8")).toBe(body);
  }
});

test("nodemailer: a body of short dotted lines over several spool blocks arrives byte for byte", async () => {
  // Unstuffed in place on the way in, stuffed again block by block on the way out (docs/smtp.md "DATA on the wire"):
  // dots at every offset of a block edge, lines of one to forty octets.
  const m = marker();
  const patterns = ["..", ".", ".x", "", "...", ". .", "a.b"];
  const lines = [`dots ${m}`];
  for (let i = 0; lines.length < 150_000; i++) lines.push(`${patterns[i % patterns.length]}${"y".repeat(i % 41)}`);
  const body = `${lines.join("\n")}\n`;
  const header = `From: alice@mailgator.test\r\nTo: d-${m}@corp.test\r\nSubject: dots ${m}\r\n\r\n`;
  const raw = header + body.replace(/\n/g, "\r\n");
  expect(raw.length).toBeGreaterThan(3 * SPOOL_BLOCK);
  const info = await transport().sendMail({
    envelope: { from: "alice@mailgator.test", to: [`d-${m}@corp.test`] },
    raw,
  });
  expect(info.accepted).toEqual([`d-${m}@corp.test`]);
  const [copy] = await waitForSink(m, 1);
  expect(bodyOf(copy!.text)).toBe(body);
});

test("postmark-mcp: a quietly added BCC recipient is refused and nobody receives the message", async () => {
  const m = marker();
  let error: (Error & { responseCode?: number; rejected?: string[] }) | null = null;
  try {
    await transport().sendMail({
      from: "alice@mailgator.test",
      to: `ok-${m}@corp.test`,
      bcc: `phan-${m}@giftshop.test`,
      subject: `invoice ${m}`,
      text: "Your invoice is attached.",
    });
  } catch (e) {
    error = e as typeof error;
  }
  expect(error).not.toBeNull();
  expect(error!.responseCode).toBe(554);
  // Nothing reached the server: send an allowed message, wait for it, then look for the refused one.
  const barrier = marker();
  await transport().sendMail({
    from: "alice@mailgator.test",
    to: `barrier-${barrier}@corp.test`,
    subject: barrier,
    text: "x",
  });
  await waitForSink(barrier, 1);
  expect(sinkCopies(m)).toEqual([]);
  expect(postfixLog()).not.toContain(m);
  const rows = await p.rows();
  const refused = rows.find((r) => r.command === "RCPT TO" && r.target === `phan-${m}@giftshop.test`);
  expect(refused).toMatchObject({ decision: "deny", rule: "nothing else", protocol: "smtp", operation: "mail:send" });
  expect(
    rows.some((r) => r.command === "DATA" && r.decision === "deny" && r.reason.includes(`phan-${m}@giftshop.test`)),
  ).toBe(true);
});

test("Python smtplib: allowed mail arrives with an identical body", async () => {
  const m = marker();
  const user = upstreams().users[0]!;
  const body = trickyBody(m).replace(/\n/g, "\r\n");
  const file = join(p.dir, `py-${m}.eml`);
  writeFileSync(file, `From: alice@mailgator.test\r\nTo: py-${m}@corp.test\r\nSubject: smtplib ${m}\r\n\r\n${body}`);
  const script = `
import smtplib, sys
with open(sys.argv[2], "rb") as f: msg = f.read()
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]))
s.login(sys.argv[3], sys.argv[4])
refused = s.sendmail("alice@mailgator.test", ["py-${m}@corp.test"], msg)
s.quit()
print("refused", refused)
`;
  const run = await exec(["python3", "-c", script, String(p.port), file, user.user, user.password]);
  expect(run.stderr).toBe("");
  expect(run.stdout.trim()).toBe("refused {}");
  const [copy] = await waitForSink(m, 1);
  expect(copy!.recipient).toBe(`py-${m}@corp.test`);
  expect(Buffer.from(bodyOf(copy!.text), "latin1").toString("utf8")).toBe(body.replace(/\r\n/g, "\n"));
});

test("swaks --pipeline: allowed mail to two recipients arrives with an identical body", async () => {
  const m = marker();
  const user = upstreams().users[0]!;
  const body = trickyBody(m).replace(/\n/g, "\r\n");
  const file = join(p.dir, `swaks-${m}.eml`);
  // swaks ends --data with its own CRLF before the dot, so the file leaves out the last one.
  writeFileSync(
    file,
    `From: alice@mailgator.test\r\nTo: s1-${m}@corp.test, s2-${m}@corp.test\r\nSubject: swaks ${m}\r\n\r\n` +
      `${body.replace(/\r\n$/, "")}`,
  );
  const run = await exec([
    "swaks",
    "--server",
    `127.0.0.1:${p.port}`,
    "--pipeline",
    "--auth",
    "PLAIN",
    "--auth-user",
    user.user,
    "--auth-password",
    user.password,
    "--from",
    "alice@mailgator.test",
    "--to",
    `s1-${m}@corp.test,s2-${m}@corp.test`,
    "--data",
    `@${file}`,
  ]);
  const out = run.stdout;
  expect(run.exitCode, out.slice(-500)).toBe(0);
  // swaks really pipelined: MAIL, both RCPTs and DATA went out before the first reply came back.
  expect(out.slice(0, 2000)).toMatch(
    new RegExp(
      / [-~]> MAIL FROM:<alice@mailgator\.test>\n [-~]> RCPT TO:<s1-[0-9a-f]+@corp\.test>\n/.source +
        / [-~]> RCPT TO:<s2-[0-9a-f]+@corp\.test>\n [-~]> DATA/.source,
    ),
  );
  const copies = await waitForSink(m, 2);
  expect(copies.map((c) => c.recipient).sort()).toEqual([`s1-${m}@corp.test`, `s2-${m}@corp.test`]);
  for (const copy of copies)
    expect(Buffer.from(bodyOf(copy.text), "latin1").toString("utf8")).toBe(body.replace(/\r\n/g, "\n"));
});

test("swaks --pipeline with a denied recipient: refused, nothing delivered", async () => {
  const m = marker();
  const user = upstreams().users[0]!;
  const run = await exec([
    "swaks",
    "--server",
    `127.0.0.1:${p.port}`,
    "--pipeline",
    "--auth",
    "PLAIN",
    "--auth-user",
    user.user,
    "--auth-password",
    user.password,
    "--from",
    "alice@mailgator.test",
    "--to",
    `ok-${m}@corp.test,evil-${m}@x.test`,
    "--header",
    `Subject: ${m}`,
  ]);
  const out = run.stdout;
  expect(out).toContain("<** 550 5.7.1");
  expect(run.exitCode).not.toBe(0);
  const barrier = marker();
  await transport().sendMail({
    from: "alice@mailgator.test",
    to: `barrier-${barrier}@corp.test`,
    subject: barrier,
    text: "x",
  });
  await waitForSink(barrier, 1);
  expect(sinkCopies(m)).toEqual([]);
});
