/**
 * Approving a held 8-bit message when the upstream server does not offer 8BITMIME (docs/approvals.md "Deciding";
 * docs/smtp.md "Replay"): RFC 6152 §3 forbids sending it there and Mailgator never converts, so nothing goes upstream
 * (not even MAIL), the approval records why in an `APPROVE` error row, and the message stays held (not lost: it can be
 * denied, or approved again once the upstream offers 8BITMIME). A held 7-bit message is still sent. Against the real
 * Postfix's `smtp7bit` listener (docs/upstreams.md), which would take 8-bit data anyway.
 *
 * A proxy whose upstream is known not to offer 8BITMIME refuses such a message before holding it
 * (tests/e2e/eight-bit-upstream-ask.test.ts), so what reaches an approval against one was held while the upstream
 * offered 8BITMIME (a reload, or the approving command's config, names another server since) or while it could not
 * be reached, when whether it does is not known (docs/approvals.md "Holding").
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { freePort } from "../../scripts/upstreams/ports.ts";
import { type ApprovalContext, approve } from "../../src/approvals/service.ts";
import { generateToken, hashToken } from "../../src/vault/token.ts";
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

/** Holds 8-bit messages: its upstream is Postfix's usual listener, which offers 8BITMIME. */
let proxy: TestProxy;
/** Vault mode, its upstream an address where nothing listens: whether it offers 8BITMIME is not known. */
let unreachable: TestProxy;
const agentToken = generateToken();

beforeAll(async () => {
  const up = upstreams();
  proxy = await startTestProxy({ rules: askManagersRules("http://127.0.0.1:1"), approvals: true });
  const user = up.users[0]!;
  unreachable = await startTestProxy({
    rules: `${askManagersRules("http://127.0.0.1:1")}
[[agents]]
name = "bot"
token_hash = "${hashToken(agentToken)}"
account = "main"

[accounts.main]
username = "${user.user}"
password = "${user.password}"
`,
    approvals: true,
    upstreamAddr: `127.0.0.1:${await freePort()}`,
  });
});

afterAll(async () => {
  await proxy?.close();
  await unreachable?.close();
});

/** Approving `p`'s held messages, as with a config whose upstream is Postfix's `smtp7bit` listener. */
function approvingThrough7bit(p: TestProxy): ApprovalContext {
  const up = upstreams();
  const smtp = { ...p.config.smtp!, upstreamAddr: { host: up.host, port: up.ports.smtp7bit } };
  return { config: { ...p.config, smtp }, store: p.approvals!, audit: p.audit, protocol: "cli" };
}

/** Sends `text` (octets as they are) from alice to `to` over 8BITMIME through `p`, as `login`: held; its id. */
async function hold8bit(
  p: TestProxy,
  to: string,
  text: Buffer,
  login: { user: string; password: string } = upstreams().users[0]!,
): Promise<string> {
  const c = await loggedIn(p.port, { ...upstreams().users[0]!, ...login });
  expect((await c.command("MAIL FROM:<alice@mailgator.test> BODY=8BITMIME")).code).toBe(250);
  expect((await c.command(`RCPT TO:<${to}>`)).code).toBe(250);
  expect((await c.command("DATA")).code).toBe(354);
  c.write(Buffer.concat([text, Buffer.from(".\r\n")]));
  const r = await c.reply();
  await c.command("QUIT");
  c.close();
  return heldId(r.lines.join(" "));
}

/** The APPROVE rows of held message `id` in `p`'s log, as [decision, reason]. */
async function approveRows(p: TestProxy, id: string): Promise<string[][]> {
  return (await p.rows())
    .filter((r) => r.command === "APPROVE" && r.target === id)
    .map((r) => [r.decision, r.reason ?? ""]);
}

/** Approving `id` through `ctx` sends nothing, twice, and leaves it held with its bytes `text`. */
async function refusedAndKept(p: TestProxy, ctx: ApprovalContext, id: string, text: Buffer): Promise<void> {
  expect(await approve(ctx, id, "test")).toEqual({ outcome: "not-sent", reason: REASON });
  expect(await approveRows(p, id)).toEqual([["error", `approved by test; not sent, still held: ${REASON}`]]);
  // Not lost: still held with its bytes, and approving again fails the same way rather than sending.
  expect(p.approvals!.row(id)!.state).toBe("held");
  expect((await p.approvals!.readMessage(id))?.message.equals(text)).toBe(true);
  expect(await approve(ctx, id, "test")).toEqual({ outcome: "not-sent", reason: REASON });
  expect(p.approvals!.row(id)!.state).toBe("held");
}

test("held while the upstream offered 8BITMIME, approved through one without: nothing sent, still held", async () => {
  const m = marker();
  const to = `eight-${m}@outside.example`;
  const text = Buffer.from(message({ From: "alice@mailgator.test", To: to, Subject: `8-bit ${m}` }, `Grüße ${m}\n`));
  const id = await hold8bit(proxy, to, text);
  expect(proxy.approvals!.row(id)!.state).toBe("held");
  await refusedAndKept(proxy, approvingThrough7bit(proxy), id, text);

  // Nothing reached Postfix: no copy in the sink, and its log never names the marker.
  await Bun.sleep(1000);
  expect(sinkCopies(m)).toEqual([]);
  expect(postfixLog()).not.toContain(m);
});

test("held while the upstream could not be reached (vault mode): held, and the approval refuses it", async () => {
  // The connection opened while the message came in failed: whether the upstream offers 8BITMIME is not known, and
  // the message is held as any other; the approval's own connection decides (docs/approvals.md "Holding").
  const m = marker();
  const to = `unknown-${m}@outside.example`;
  const text = Buffer.from(message({ From: "alice@mailgator.test", To: to, Subject: `8-bit ${m}` }, `Grüße ${m}\n`));
  const id = await hold8bit(unreachable, to, text, { user: "bot", password: agentToken });
  expect(unreachable.approvals!.row(id)!.state).toBe("held");
  await refusedAndKept(unreachable, approvingThrough7bit(unreachable), id, text);
  await Bun.sleep(1000);
  expect(sinkCopies(m)).toEqual([]);
  expect(postfixLog()).not.toContain(m);
});

test("a held 7-bit message approved through the upstream without 8BITMIME is sent", async () => {
  const m = marker();
  const to = `seven-${m}@outside.example`;
  const id = await holdMessage(proxy.port, to, `7-bit ${m}`, `Hello ${m}\n`);
  const ctx = approvingThrough7bit(proxy);
  const result = await approve(ctx, id, "test");
  expect(result.outcome).toBe("sent");
  expect(proxy.approvals!.row(id)!.state).toBe("sent");
  expect((await waitForSink(m, 1)).map((c) => c.recipient)).toEqual([to]);
});
