/**
 * The short fuzz of docs/reliability.md ("Soak, faults and fuzzing"): 40,000 mutated IMAP and SMTP inputs against a
 * real `mailgator serve` process, with the checking relay between it and Dovecot and Postfix. The proxy must stay
 * up, release every agent and upstream connection, serve a normal session afterwards, stay under an RSS bound,
 * and send upstream only well-formed, allowlisted commands. The relay's own check is tested first, so that a
 * "0 malformed" cannot come from a relay that checks nothing.
 */

import { expect, test } from "bun:test";
import { connect } from "node:net";
import { runFuzz } from "../../scripts/soak/fuzz.ts";
import { LOOPBACK } from "../../scripts/soak/lib.ts";
import { startRelay, withoutQresync } from "../../scripts/soak/relay.ts";
import { upstreams } from "../fixtures/index.ts";

/** Sends `bytes` through the relay and waits until it has counted `lines` of them (at most 10 s). */
async function through(
  port: number,
  bytes: string,
  stats: { commands: number; malformed: number },
  lines: number,
): Promise<void> {
  const socket = connect({ host: LOOPBACK, port });
  await new Promise<void>((resolve) => socket.once("connect", () => resolve()));
  socket.write(Buffer.from(bytes, "latin1"));
  const deadline = Date.now() + 10_000;
  while (stats.commands + stats.malformed < lines && Date.now() < deadline) await Bun.sleep(20);
  await Bun.sleep(100); // and nothing more than that
  socket.destroy();
}

test("the relay counts what it cannot parse or that is not on the allowlist", async () => {
  const imap = await startRelay("imap", upstreams().ports.imap);
  const smtp = await startRelay("smtp", upstreams().ports.smtp);
  try {
    await through(imap.port, "a1 NOOP\r\na2 FROBNICATE\r\na3 FETCH 1:* (FLAGS\r\na4 IDLE\r\nDONE\r\n", imap.stats, 5);
    expect(imap.stats.commands).toBe(3); // NOOP, IDLE, DONE
    expect(imap.stats.malformed).toBe(2);
    const smtpInput = `EHLO relay.test\r\nVRFY x\r\nNOOP\nMAIL FROM:<a@b.test> ${"X".repeat(1000)}\r\nQUIT\r\n`;
    await through(smtp.port, smtpInput, smtp.stats, 5);
    expect(smtp.stats.commands).toBe(2); // EHLO, QUIT
    expect(smtp.stats.malformed).toBe(3); // VRFY, the bare LF, the long line
  } finally {
    await imap.close();
    await smtp.close();
  }
});

test("the relay's --qresync hidden takes QRESYNC out of capability lists, never out of a literal", () => {
  let hidden = 0;
  const filter = withoutQresync(() => hidden++);
  const literal = "* CAPABILITY IMAP4rev1 QRESYNC\r\n";
  const input =
    "* OK [CAPABILITY IMAP4rev1 ID QRESYNC] ready\r\n" +
    "a1 OK [CAPABILITY IMAP4rev1 CONDSTORE QRESYNC ESEARCH] Logged in\r\n" +
    "* CAPABILITY IMAP4rev1 QRESYNC MOVE\r\n" +
    `* 1 FETCH (BODY[] {${literal.length}}\r\n${literal})\r\n` +
    "* OK QRESYNC is not a capability here\r\n" +
    "a2 OK done\r\n";
  // A byte at a time: lines and literals cut anywhere.
  let out = "";
  for (const byte of Buffer.from(input, "latin1")) out += Buffer.from(filter(Uint8Array.of(byte))).toString("latin1");
  expect(out).toBe(
    "* OK [CAPABILITY IMAP4rev1 ID] ready\r\n" +
      "a1 OK [CAPABILITY IMAP4rev1 CONDSTORE ESEARCH] Logged in\r\n" +
      "* CAPABILITY IMAP4rev1 MOVE\r\n" +
      `* 1 FETCH (BODY[] {${literal.length}}\r\n${literal})\r\n` +
      "* OK QRESYNC is not a capability here\r\n" +
      "a2 OK done\r\n",
  );
  expect(hidden).toBe(3);
});

test("40,000 fuzzed inputs: proxy up, no slot lost, RSS bounded, upstream gets only well-formed commands", async () => {
  const report = await runFuzz({
    inputs: 40_000,
    concurrency: 48,
    perConnection: 200,
    imapShare: 0.7,
    maxSeconds: 240,
    rssLimitMiB: 300,
    sampleMs: 1000,
    seed: 17,
    env: {},
    log: () => {},
  });
  expect(report.problems).toEqual([]);
  expect(report.inputs.imap + report.inputs.smtp).toBe(40_000);
  expect(report.relay.imap.commands).toBeGreaterThan(100);
  expect(report.relay.smtp.commands).toBeGreaterThan(50);
  expect(report.relay.imap.malformed + report.relay.smtp.malformed).toBe(0);
  expect(report.leftover).toEqual({ agents: 0, upstream: 0 });
  // Its mutated logins fail; they must not lock the fuzzer's own valid logins out (docs/config.md "Who connects"),
  // or the inputs meant for logged-in sessions fuzz the lock-out's refusal instead.
  expect(report.logins.locked).toBe(0);
  expect(report.logins.ok).toBeGreaterThan(report.logins.refused);
}, 360_000);
