/**
 * Approving a held 8-bit message when the upstream server does not offer 8BITMIME (docs/approvals.md "Deciding";
 * docs/smtp.md "Replay"): RFC 6152 §3 forbids sending it there and Mailgator never converts, so nothing goes upstream
 * (not even MAIL), the approval records why in an `APPROVE` error row, and the message stays held (not lost: it can be
 * denied, or approved again once the upstream offers 8BITMIME). A held 7-bit message is still sent. Against the real
 * Postfix's `smtp7bit` listener (docs/upstreams.md), which would take 8-bit data anyway.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { type ApprovalContext, approve } from "../../src/approvals/service.ts";
import { heldId } from "../fixtures/delivery.ts";
import {
  askManagersRules,
  holdMessage,
  loggedIn,
  marker,
  message,
  postfixLog,
  sinkCopies,
  startTestProxy,
  type TestProxy,
  upstreams,
  waitForSink,
} from "../smtp/helpers.ts";

const REASON =
  "the upstream server does not accept 8-bit messages (it does not offer 8BITMIME, RFC 6152) and this message " +
  "holds 8-bit octets";

let proxy: TestProxy;
let ctx: ApprovalContext;

beforeAll(async () => {
  const up = upstreams();
  proxy = await startTestProxy({
    rules: askManagersRules("http://127.0.0.1:1"),
    approvals: true,
    upstreamAddr: `${up.host}:${up.ports.smtp7bit}`,
  });
  ctx = { config: proxy.config, store: proxy.approvals!, audit: proxy.audit, protocol: "cli" };
});

afterAll(async () => {
  await proxy?.close();
});

/** Sends `text` (octets as they are) from alice to `to` over 8BITMIME: held by the ask rule; its id. */
async function hold8bit(to: string, text: Buffer): Promise<string> {
  const c = await loggedIn(proxy.port);
  expect((await c.command("MAIL FROM:<alice@mailgator.test> BODY=8BITMIME")).code).toBe(250);
  expect((await c.command(`RCPT TO:<${to}>`)).code).toBe(250);
  expect((await c.command("DATA")).code).toBe(354);
  c.write(Buffer.concat([text, Buffer.from(".\r\n")]));
  const r = await c.reply();
  await c.command("QUIT");
  c.close();
  return heldId(r.lines.join(" "));
}

/** The APPROVE rows of held message `id`, as [decision, reason]. */
async function approveRows(id: string): Promise<string[][]> {
  return (await proxy.rows())
    .filter((r) => r.command === "APPROVE" && r.target === id)
    .map((r) => [r.decision, r.reason ?? ""]);
}

test("a held 8-bit message approved: nothing sent, the reason recorded, it stays held", async () => {
  const m = marker();
  const to = `eight-${m}@outside.example`;
  const text = Buffer.from(message({ From: "alice@mailgator.test", To: to, Subject: `8-bit ${m}` }, `Grüße ${m}\n`));
  const id = await hold8bit(to, text);
  expect(proxy.approvals!.row(id)!.state).toBe("held");

  const result = await approve(ctx, id, "test");
  expect(result).toEqual({ outcome: "not-sent", reason: REASON });
  expect(await approveRows(id)).toEqual([["error", `approved by test; not sent, still held: ${REASON}`]]);
  // Not lost: still held with its bytes, and approving again fails the same way rather than sending.
  expect(proxy.approvals!.row(id)!.state).toBe("held");
  expect((await proxy.approvals!.readMessage(id))?.message.equals(text)).toBe(true);
  expect(await approve(ctx, id, "test")).toEqual({ outcome: "not-sent", reason: REASON });
  expect(proxy.approvals!.row(id)!.state).toBe("held");

  // Nothing reached Postfix: no copy in the sink, and its log never names the marker.
  await Bun.sleep(1000);
  expect(sinkCopies(m)).toEqual([]);
  expect(postfixLog()).not.toContain(m);
});

test("a held 7-bit message approved to the same upstream is sent", async () => {
  const m = marker();
  const to = `seven-${m}@outside.example`;
  const id = await holdMessage(proxy.port, to, `7-bit ${m}`, `Hello ${m}\n`);
  const result = await approve(ctx, id, "test");
  expect(result.outcome).toBe("sent");
  expect(proxy.approvals!.row(id)!.state).toBe("sent");
  expect((await waitForSink(m, 1)).map((c) => c.recipient)).toEqual([to]);
});
