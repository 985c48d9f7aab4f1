/**
 * How long the end of DATA waits for the session's upstream connection, still being opened, to learn whether the
 * upstream offers 8BITMIME (UPSTREAM_OPENING_WAIT_MS; docs/smtp.md "Replay", docs/approvals.md "Holding"). In vault
 * mode a password account's connection is opened while the message comes in; at the final dot of an 8-bit message the
 * proxy waits for it at most that long, then goes on with the upstream's extensions not known: a message an `ask` rule
 * holds is held (holding needs no upstream), an allowed one goes on to the replay, which waits for that same
 * connection and checks there. The connection still being opened is then used by the session; if the session ends
 * first, it gets the same wait to finish opening and be quit, and is dropped past it (docs/smtp.md "Connections").
 *
 * The wait is shortened to WAIT_MS here (the session's limit overrides). The upstream is an address that accepts TCP
 * and never says anything, or a relay that joins each connection to the real Postfix's `smtp7bit` listener (no
 * 8BITMIME, docs/upstreams.md) only after a delay: shorter than the wait (its EHLO is read in time, the message is
 * refused as before) or longer (not known in time). The agent sends with nodemailer.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import nodemailer from "nodemailer";
import { generateToken, hashToken } from "../../src/vault/token.ts";
import { heldId } from "../fixtures/delivery.ts";
import { type SilentConnection, SilentUpstream } from "../fixtures/silent-upstream.ts";
import { TcpRelay } from "../fixtures/tcp-relay.ts";
import {
  ASK_OUTSIDE_RULES,
  marker,
  postfixLog,
  sinkCopies,
  startTestProxy,
  type TestProxy,
  upstreams,
  waitForSink,
} from "./helpers.ts";

/** The wait in these tests (UPSTREAM_OPENING_WAIT_MS is 10 s: tests/e2e/eight-bit-silent-upstream.test.ts). */
const WAIT_MS = 3000;
/** How late past the wait a reply may come on a loaded machine (a hold writes to the state database). */
const SLACK_MS = 2500;
/** Delay before the relay reaches Postfix: well within the wait (Postfix's greeting, STARTTLS and login follow). */
const IN_TIME_MS = 1000;
/** Delay before the relay reaches Postfix: past the wait, with room for the reply to the final dot to come first. */
const LATE_MS = WAIT_MS + 3000;

const REFUSAL =
  "554 5.6.3 The upstream server does not accept 8-bit messages (it does not offer 8BITMIME, RFC 6152) and this " +
  "message holds 8-bit octets; nothing was sent; send it as 7-bit (base64 or quoted-printable)";
const WHY =
  "the upstream server does not accept 8-bit messages (it does not offer 8BITMIME, RFC 6152) and this message holds " +
  "8-bit octets";

/** The reason of the RCPT TO row of a recipient the ask rule holds for. */
const ASKED = 'mail:send matched rule 2 "outside needs a manager" (no conditions)';

const agentToken = generateToken();
const sender = upstreams().users[0]!;

/** Vault mode: the agent "bot" sends as the first test user; colleagues allowed, everyone else held for managers. */
const RULES = `${ASK_OUTSIDE_RULES}
[[agents]]
name = "bot"
token_hash = "${hashToken(agentToken)}"
account = "main"

[accounts.main]
username = "${sender.user}"
password = "${sender.password}"
`;

let silent: SilentUpstream;
/** Joins each connection to Postfix's smtp7bit listener after `relayDelayMs`; keeps the proxy's side of each. */
let relay: TcpRelay;
let relayDelayMs = 0;
let relayed = 0;
const relayedSides: SilentConnection[] = [];
/** In front of the silent upstream. */
let quiet: TestProxy;
/** In front of the delaying relay. */
let slow: TestProxy;

beforeAll(async () => {
  const up = upstreams();
  silent = await SilentUpstream.start();
  relay = await TcpRelay.start({ host: up.host, port: up.ports.smtp7bit }, async (client) => {
    relayed++;
    relayedSides.push({ socket: client, closed: new Promise((resolve) => client.once("close", () => resolve())) });
    await Bun.sleep(relayDelayMs);
    return undefined;
  });
  const limits = { upstreamOpeningWaitMs: WAIT_MS };
  quiet = await startTestProxy({
    rules: RULES,
    approvals: true,
    upstreamAddr: `127.0.0.1:${silent.port}`,
    limits,
  });
  slow = await startTestProxy({ rules: RULES, approvals: true, upstreamAddr: `127.0.0.1:${relay.port}`, limits });
});

afterAll(async () => {
  await quiet?.close();
  await slow?.close();
  await silent?.close();
  await relay?.close();
});

/** The agent's SMTP client: one session for all its messages (a pool of one connection), logged in as "bot". */
function agent(p: TestProxy) {
  return nodemailer.createTransport({
    host: "127.0.0.1",
    port: p.port,
    secure: false,
    ignoreTLS: true,
    pool: true,
    maxConnections: 1,
    auth: { user: "bot", pass: agentToken },
  });
}

/** A message from the sender to `to`, `token` in its Subject and Message-ID; `body` as it is (UTF-8 octets). */
function raw(to: string, token: string, body: string): Buffer {
  return Buffer.from(
    `From: ${sender.address}\r\nTo: ${to}\r\nSubject: wait ${token}\r\nDate: Wed, 02 Dec 2026 12:00:00 +0000\r\n` +
      `Message-ID: <${token}@mailgator.test>\r\n\r\n${body}\r\n`,
    "utf8",
  );
}

/** Sends through `transport`: the final reply, accepted or refused, and how long the send took. */
async function send(
  transport: ReturnType<typeof agent>,
  to: string,
  message: Buffer,
): Promise<{ reply: string; ms: number }> {
  const started = performance.now();
  let reply: string;
  try {
    reply = (await transport.sendMail({ envelope: { from: sender.address, to: [to] }, raw: message })).response;
  } catch (e) {
    const response = (e as { response?: string }).response;
    if (response === undefined) throw e;
    reply = response;
  }
  return { reply, ms: performance.now() - started };
}

/** `p`'s audit rows whose target is one of `targets`, as [command, target, decision, rule, reason]. */
async function rowsOf(p: TestProxy, targets: readonly string[]): Promise<(string | null)[][]> {
  return (await p.rows())
    .filter((r) => r.target !== null && targets.includes(r.target))
    .map((r) => [r.command, r.target, r.decision, r.rule, r.reason]);
}

describe("an upstream that accepts the connection and never answers", () => {
  test("an 8-bit message an ask rule holds is held after the wait; its connection is dropped later", async () => {
    const before = silent.accepted.length;
    const transport = agent(quiet);
    const m = marker();
    const to = `out-${m}@outside.example`;
    try {
      const { reply, ms } = await send(transport, to, raw(to, m, `Grüße aus Köln ${m}`));
      const id = heldId(reply);
      // Not before the wait (whether the upstream offers 8BITMIME could have been learned), nor long after it:
      // before, the reply waited for the upstream's greeting (UPSTREAM_REPLY_TIMEOUT_MS, 10 minutes).
      expect(ms).toBeGreaterThanOrEqual(WAIT_MS);
      expect(ms).toBeLessThan(WAIT_MS + SLACK_MS);
      expect(quiet.approvals!.list().map((r) => [r.id, r.state])).toContainEqual([id, "held"]);
      expect((await quiet.approvals!.readMessage(id))?.message.toString("utf8")).toContain(`Grüße aus Köln ${m}`);
      expect(await rowsOf(quiet, [to, id])).toEqual([
        ["RCPT TO", to, "ask", "outside needs a manager", ASKED],
        ["DATA", id, "ask", "outside needs a manager", `held for approval (managers): asked for ${to}`],
      ]);
      // One connection was opened for the session, and is still being opened: the session goes on.
      expect(silent.accepted.length).toBe(before + 1);
      const opened = silent.accepted.at(-1)!;
      expect(opened.socket.destroyed).toBe(false);
    } finally {
      transport.close();
    }
    // The agent has left. The connection still being opened gets the same wait to finish, so that it could be quit;
    // it never does, and is dropped then, not left to the upstream's timeouts (the greeting's alone is 10 minutes).
    const opened = silent.accepted.at(-1)!;
    expect(await SilentUpstream.closesWithin(opened, WAIT_MS - 1000)).toBe(false);
    expect(await SilentUpstream.closesWithin(opened, 1000 + SLACK_MS)).toBe(true);
    expect(silent.accepted.length).toBe(before + 1);
  });
});

describe("an upstream whose connection is opened within the wait (at the limit)", () => {
  test("its EHLO is read: the 8-bit message an ask rule would hold is refused, not held", async () => {
    relayDelayMs = IN_TIME_MS;
    const before = relayed;
    const held = slow.approvals!.list().length;
    const transport = agent(slow);
    try {
      const m = marker();
      const to = `out-${m}@outside.example`;
      const { reply, ms } = await send(transport, to, raw(to, m, `Grüße ${m}`));
      expect(reply).toBe(REFUSAL);
      expect(ms).toBeGreaterThanOrEqual(IN_TIME_MS);
      expect(ms).toBeLessThan(WAIT_MS);
      expect(slow.approvals!.list().length).toBe(held);
      expect(await rowsOf(slow, [to, `<${m}@mailgator.test>`])).toEqual([
        ["RCPT TO", to, "ask", "outside needs a manager", ASKED],
        [
          "DATA",
          `<${m}@mailgator.test>`,
          "deny",
          null,
          `not held for approval, no approver asked (nothing went upstream): ${WHY}`,
        ],
      ]);
      expect(relayed).toBe(before + 1);
    } finally {
      transport.close();
    }
  });
});

describe("an upstream whose connection is opened past the wait (one past the limit)", () => {
  test("an 8-bit message an ask rule holds is held at the wait; the session then sends on it", async () => {
    relayDelayMs = LATE_MS;
    const before = relayed;
    const transport = agent(slow);
    try {
      const m = marker();
      const to = `out-${m}@outside.example`;
      const { reply, ms } = await send(transport, to, raw(to, m, `Grüße ${m}`));
      const id = heldId(reply);
      expect(ms).toBeGreaterThanOrEqual(WAIT_MS);
      expect(ms).toBeLessThan(LATE_MS);
      expect(slow.approvals!.row(id)!.state).toBe("held");
      expect(await rowsOf(slow, [to, id])).toEqual([
        ["RCPT TO", to, "ask", "outside needs a manager", ASKED],
        ["DATA", id, "ask", "outside needs a manager", `held for approval (managers): asked for ${to}`],
      ]);

      // The connection being opened is the session's: a 7-bit message to a colleague goes on it once it is open.
      const n = marker();
      const colleague = `pat-${n}@corp.test`;
      expect((await send(transport, colleague, raw(colleague, n, `Hello ${n}`))).reply).toStartWith("250 ");
      expect((await waitForSink(n, 1)).map((c) => c.recipient)).toEqual([colleague]);
      // Its EHLO is known now: an 8-bit message is refused at once, whether held or allowed.
      const k = marker();
      const other = `out-${k}@outside.example`;
      const third = await send(transport, other, raw(other, k, `Grüße ${k}`));
      expect(third.reply).toBe(REFUSAL);
      expect(third.ms).toBeLessThan(WAIT_MS);
      expect(
        slow
          .approvals!.list()
          .filter((r) => r.state === "held")
          .map((r) => r.id),
      ).toEqual([id]);
      // One connection for the whole session.
      expect(relayed).toBe(before + 1);
      await Bun.sleep(500);
      expect(sinkCopies(m)).toEqual([]);
      expect(sinkCopies(k)).toEqual([]);
      expect(postfixLog()).not.toContain(m);
    } finally {
      transport.close();
    }
  });

  test("the agent leaves once its message is held: the connection, open within the wait, is quit", async () => {
    relayDelayMs = WAIT_MS + 1000;
    const transport = agent(slow);
    let id: string;
    try {
      const m = marker();
      const to = `out-${m}@outside.example`;
      const { reply, ms } = await send(transport, to, raw(to, m, `Grüße ${m}`));
      id = heldId(reply);
      expect(ms).toBeLessThan(relayDelayMs);
    } finally {
      transport.close();
    }
    // Not dropped when the session ends (it is still logging in: a server would log a lost connection), but closed
    // once open, well before the wait after the session's end is over: the proxy quit it.
    const side = relayedSides.at(-1)!;
    expect(await SilentUpstream.closesWithin(side, 500)).toBe(false);
    expect(await SilentUpstream.closesWithin(side, WAIT_MS)).toBe(true);
    expect(slow.approvals!.row(id)!.state).toBe("held");
  });

  test("an allowed 8-bit message goes on to the replay, which waits for that connection and refuses it", async () => {
    relayDelayMs = LATE_MS;
    const before = relayed;
    const transport = agent(slow);
    try {
      const m = marker();
      const colleague = `pat-${m}@corp.test`;
      const { reply, ms } = await send(transport, colleague, raw(colleague, m, `Grüße ${m}`));
      expect(reply).toBe(REFUSAL);
      // Answered only once the connection was open: the replay checked its EHLO.
      expect(ms).toBeGreaterThanOrEqual(LATE_MS);
      expect(await rowsOf(slow, [`<${m}@mailgator.test>`])).toEqual([
        ["DATA", `<${m}@mailgator.test>`, "allow", null, "every recipient allowed"],
        ["DATA", `<${m}@mailgator.test>`, "deny", null, `not sent (nothing went upstream): ${WHY}`],
      ]);
      expect(relayed).toBe(before + 1);
      await Bun.sleep(500);
      expect(sinkCopies(m)).toEqual([]);
      expect(postfixLog()).not.toContain(m);
    } finally {
      transport.close();
    }
  });
});
