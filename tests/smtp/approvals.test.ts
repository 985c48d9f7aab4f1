/**
 * `ask` end to end against Postfix (docs/approvals.md): a send to a colleague goes through, a send outside is held
 * (250 held, absent from the sink) until approved (then present once, same bytes); denied and expired ones never
 * arrive; two approvers at once send one copy; the state database holds nothing of the message in clear.
 */

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { type ApprovalContext, approve, deny, expireDue, recover } from "../../src/approvals/service.ts";
import type { ApprovalStore } from "../../src/approvals/store.ts";
import { approvalPage } from "../../src/approvals/web.ts";
import {
  bodyOf,
  dataPayload,
  loggedIn,
  marker,
  message,
  sinkCopies,
  startTestProxy,
  type TestProxy,
  upstreams,
  waitForSink,
} from "./helpers.ts";

const RULES = `
[approvals]
base_url = "http://127.0.0.1:1"

[approvals.groups.managers]
recipients = ["boss@corp.test"]

[[rules]]
name = "colleagues"
action = "allow"
operations = ["send"]
to = "*@corp.test"

[[rules]]
name = "outside needs a manager"
action = "ask"
operations = ["send"]
ask_groups = ["managers"]
`;

let proxy: TestProxy;
let store: ApprovalStore;
let ctx: ApprovalContext;

beforeAll(async () => {
  proxy = await startTestProxy({ rules: RULES, approvals: true });
  store = proxy.approvals!;
  ctx = { config: proxy.config, store, audit: proxy.audit, protocol: "cli" };
});
afterAll(async () => {
  await proxy.close();
});

/** Sends one message through the proxy; returns the final reply. */
async function send(to: string, m: string, extra = ""): Promise<{ code: number; text: string; message: string }> {
  const c = await loggedIn(proxy.port);
  const text = message(
    {
      From: "alice@mailgator.test",
      To: to,
      Subject: `approval ${m}`,
      Date: "Wed, 02 Dec 2026 12:00:00 +0000",
      "Message-ID": `<${m}@mailgator.test>`,
    },
    `Hello ${m}\nsecond line ${extra}\n`,
  );
  expect((await c.command("MAIL FROM:<alice@mailgator.test>")).code).toBe(250);
  expect((await c.command(`RCPT TO:<${to}>`)).code).toBe(250);
  expect((await c.command("DATA")).code).toBe(354);
  c.write(dataPayload(text));
  const r = await c.reply();
  await c.command("QUIT");
  return { code: r.code, text: r.lines.join(" "), message: text };
}

function heldId(text: string): string {
  const m = /Held for approval as ([0-9a-f]{32})$/.exec(text);
  if (m === null) throw new Error(`not held: ${text}`);
  return m[1]!;
}

describe("ask", () => {
  test("a colleague gets it at once; the outside copy waits for approval, then arrives once, same bytes", async () => {
    const m = marker();
    const inside = await send(`colleague-${m}@corp.test`, m);
    expect(inside.code).toBe(250);
    await waitForSink(`Hello ${m}`, 1);

    const m2 = marker();
    const outside = await send(`someone-${m2}@outside.example`, m2);
    expect(outside.code).toBe(250);
    const id = heldId(outside.text);
    expect(store.row(id)!.state).toBe("held");
    await Bun.sleep(1500);
    expect(sinkCopies(`Hello ${m2}`)).toHaveLength(0);

    const result = await approve(ctx, id, "test");
    expect(result.outcome).toBe("sent");
    const copies = await waitForSink(`Hello ${m2}`, 1);
    await Bun.sleep(1000);
    expect(sinkCopies(`Hello ${m2}`)).toHaveLength(1);
    expect(copies[0]!.recipient).toBe(`someone-${m2}@outside.example`);
    // Postfix adds its own header fields above; what the agent sent follows, unchanged.
    expect(copies[0]!.text.replace(/\r\n/g, "\n")).toContain(outside.message.replace(/\r\n/g, "\n"));
    expect(bodyOf(copies[0]!.text.replace(/\r\n/g, "\n"))).toBe(`Hello ${m2}\nsecond line \n`);
    expect(store.row(id)!.state).toBe("sent");
    expect(store.message(id)).toBeNull();
    // Approving again sends nothing more.
    expect(await approve(ctx, id, "test")).toEqual({ outcome: "refused", state: "sent" });

    const rows = await proxy.rows();
    const mine = rows.filter((r) => r.target === id).map((r) => [r.command, r.decision, r.rule]);
    expect(mine).toEqual([
      ["DATA", "ask", "outside needs a manager"],
      ["APPROVE", "allow", "outside needs a manager"],
      ["APPROVAL SENT", "allow", "outside needs a manager"],
    ]);
  });

  test("denied and expired messages never arrive, and are wiped", async () => {
    const m = marker();
    const denied = heldId((await send(`x-${m}@outside.example`, m)).text);
    expect(deny(ctx, denied, "test", "no")).toBe("held");
    expect(store.message(denied)).toBeNull();
    expect(await approve(ctx, denied, "test")).toEqual({ outcome: "refused", state: "denied" });

    const m2 = marker();
    const expired = heldId((await send(`y-${m2}@outside.example`, m2)).text);
    const due = expireDue(ctx, store.row(expired)!.expires);
    expect(due.map((r) => r.id)).toContain(expired);
    expect(store.message(expired)).toBeNull();
    expect(await approve(ctx, expired, "test")).toEqual({ outcome: "refused", state: "expired" });
    await Bun.sleep(1500);
    expect(sinkCopies(`Hello ${m}`)).toHaveLength(0);
    expect(sinkCopies(`Hello ${m2}`)).toHaveLength(0);
  });

  test("two approvers at the same moment: one upstream copy", async () => {
    const m = marker();
    const id = heldId((await send(`z-${m}@outside.example`, m)).text);
    const results = await Promise.all([approve(ctx, id, "one"), approve(ctx, id, "two")]);
    expect(results.map((r) => r.outcome).sort()).toEqual(["refused", "sent"]);
    await waitForSink(`Hello ${m}`, 1);
    await Bun.sleep(1500);
    expect(sinkCopies(`Hello ${m}`)).toHaveLength(1);
  });

  test("a message left sending by a dead process is never sent again: needs-check", async () => {
    const m = marker();
    const id = heldId((await send(`w-${m}@outside.example`, m)).text);
    expect(store.claim(id, "crashed").ok).toBe(true); // the claim committed; the process died before sending
    expect(recover(ctx).map((r) => r.id)).toEqual([id]);
    expect(store.row(id)!.state).toBe("needs-check");
    expect(await approve(ctx, id, "test")).toEqual({ outcome: "refused", state: "needs-check" });
    await Bun.sleep(1000);
    expect(sinkCopies(`Hello ${m}`)).toHaveLength(0);
  });

  test("the state database holds no body, recipient or credential in clear", async () => {
    const m = marker();
    const secretLine = `secret-${marker()}`;
    const id = heldId((await send(`clear-${m}@outside.example`, m, secretLine)).text);
    expect(store.message(id)!.message.toString()).toContain(secretLine);
    const user = upstreams().users[0]!;
    for (const suffix of ["", "-wal"]) {
      let bytes: string;
      try {
        bytes = readFileSync(proxy.config.state.path + suffix, "latin1");
      } catch {
        continue;
      }
      for (const needle of [secretLine, `clear-${m}`, user.password, `approval ${m}`])
        expect(bytes).not.toContain(needle);
    }
    deny(ctx, id, "test", null);
  });
});

describe("the approval page", () => {
  test("GET changes nothing; POST from the page approves once; replayed, altered, cross-origin refused", async () => {
    // The page handler mounted on a loopback HTTP server; links point at it (base_url's origin is checked on POST).
    const server = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: (req) => handler(req) });
    const origin = `http://127.0.0.1:${server.port}`;
    const config = { ...proxy.config, approvals: { ...proxy.config.approvals, baseUrl: origin } };
    const pageCtx: ApprovalContext = { ...ctx, config };
    const handler = approvalPage(pageCtx);
    try {
      const m = marker();
      const id = heldId((await send(`page-${m}@outside.example`, m)).text);
      const token = store.token(store.row(id)!);
      const link = `${origin}/approvals/${id}?t=${token}`;
      for (let i = 0; i < 3; i++) {
        const r = await fetch(link);
        expect(r.status).toBe(200);
        const html = await r.text();
        expect(html).toContain(`page-${m}@outside.example`);
        expect(html).toContain("(outside the sender's domain)");
        expect(html).toContain(`approval ${m}`);
        expect(html).toContain("outside needs a manager");
      }
      expect(store.row(id)!.state).toBe("held");
      const post = (body: string, headers: Record<string, string> = { origin }) =>
        fetch(`${origin}/approvals/${id}`, {
          method: "POST",
          body,
          headers: { "content-type": "application/x-www-form-urlencoded", ...headers },
        });
      const altered = `${token.slice(0, -2)}${token.endsWith("AA") ? "BB" : "AA"}`;
      expect((await fetch(`${origin}/approvals/${id}?t=${altered}`)).status).toBe(403);
      expect((await post(`t=${altered}&action=approve`)).status).toBe(403);
      expect((await post(`t=${token}&action=approve`, { origin: "http://evil.example" })).status).toBe(403);
      expect((await post(`t=${token}&action=approve`, {})).status).toBe(403);
      expect(store.row(id)!.state).toBe("held");
      await Bun.sleep(1000);
      expect(sinkCopies(`Hello ${m}`)).toHaveLength(0);

      const ok = await post(`t=${token}&action=approve`);
      expect(ok.status).toBe(200);
      expect(await ok.text()).toContain("The message was sent.");
      await waitForSink(`Hello ${m}`, 1);
      const again = await post(`t=${token}&action=approve`);
      expect(again.status).toBe(409);
      expect(await again.text()).toContain("already approved");
      expect((await fetch(link)).status).toBe(409);
      await Bun.sleep(1000);
      expect(sinkCopies(`Hello ${m}`)).toHaveLength(1);

      const m2 = marker();
      const late = heldId((await send(`late-${m2}@outside.example`, m2)).text);
      expireDue(ctx, store.row(late)!.expires);
      const expired = await fetch(`${origin}/approvals/${late}?t=${store.token(store.row(late)!)}`);
      expect(expired.status).toBe(409);
      expect(await expired.text()).toContain("expired before anyone decided");
    } finally {
      server.stop(true);
    }
  });
});

describe("quotas", () => {
  test("a held message counts against the quota when it is held: asking again does not bypass it", async () => {
    const quoted = await startTestProxy({
      rules: `${RULES}\n[[quotas]]\nname = "one"\nsends_per_hour = 1\n`,
      approvals: true,
    });
    const c = await loggedIn(quoted.port);
    try {
      const replies: number[] = [];
      for (let i = 0; i < 2; i++) {
        const m = marker();
        expect((await c.command("MAIL FROM:<alice@mailgator.test>")).code).toBe(250);
        expect((await c.command(`RCPT TO:<q-${m}@outside.example>`)).code).toBe(250);
        expect((await c.command("DATA")).code).toBe(354);
        c.write(dataPayload(message({ From: "alice@mailgator.test", Subject: `quota ${m}` }, `Hello ${m}\n`)));
        const r = await c.reply();
        replies.push(r.code);
        if (i === 1) expect(r.lines.join(" ")).toContain("4.7.1");
      }
      expect(replies).toEqual([250, 452]);
      expect(quoted.approvals!.list().filter((r) => r.state === "held")).toHaveLength(1);
    } finally {
      await c.command("QUIT");
      await quoted.close();
    }
  });
});
