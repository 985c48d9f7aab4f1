/**
 * `ask` end to end against Postfix (docs/approvals.md): a send to a colleague goes through, a send outside is held
 * (250 held, absent from the sink) until approved (then present once, same bytes); denied and expired ones never
 * arrive; two approvers at once send one copy; the state database holds nothing of the message in clear.
 */

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { freePort } from "../../scripts/upstreams/ports.ts";
import { MORE_TEXT } from "../../src/approvals/preview.ts";
import { type ApprovalContext, approve, deny, expireDue, ORPHAN_REASON, recover } from "../../src/approvals/service.ts";
import { type ApprovalStore, HELD_PART_BYTES, HELD_PART_KIND } from "../../src/approvals/store.ts";
import { approvalPage } from "../../src/approvals/web.ts";
import { type AuditEvent, AuditLog } from "../../src/audit/index.ts";
import { approvals } from "../../src/cli/commands/approvals.ts";
import { MAX_HELD_PER_AGENT } from "../../src/smtp/limits.ts";
import { fillAgain, freeSpace, fullAuditLog, healthyAgain, rowsAbout, syncFailingLog } from "../audit/unhealthy.ts";
import { heldId } from "../fixtures/index.ts";
import {
  ASK_OUTSIDE_RULES,
  bodyOf,
  dataPayload,
  loggedIn,
  marker,
  message,
  type RawClient,
  sinkCopies,
  startTestProxy,
  type TestProxy,
  upstreams,
  vaultClient,
  vaultConfig,
  waitForSink,
} from "./helpers.ts";

const RULES = ASK_OUTSIDE_RULES;

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

/** What a decider is told while the audit log cannot be written (AUDIT_UNAVAILABLE in src/approvals/service.ts). */
const UNAVAILABLE = "the audit log cannot be written; try again later";
/** The claim of a process that is gone (ApprovalStore.claim's owner): a pid above Linux's largest. */
const GONE = "4194305:1";

/** What `mailgator approvals` decides with: a proxy's config, state database and audit log. */
function cliContext(p: TestProxy): ApprovalContext {
  return { config: p.config, store: p.approvals!, audit: p.audit, protocol: "cli" };
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
    // What approvers are shown: the inspector's verdict beside the (absent) file names, and all of the text.
    expect(store.details(id)!.preview).toMatchObject({ attachments: [], hasAttachment: false, textCut: false });
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
    expect(await store.readMessage(id)).toBeNull();
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
    expect(await deny(ctx, denied, "test", "no")).toEqual({ outcome: "denied", state: "held" });
    expect(await store.readMessage(denied)).toBeNull();
    expect(await approve(ctx, denied, "test")).toEqual({ outcome: "refused", state: "denied" });

    const m2 = marker();
    const expired = heldId((await send(`y-${m2}@outside.example`, m2)).text);
    const due = expireDue(ctx, store.row(expired)!.expires);
    expect(due.map((r) => r.id)).toContain(expired);
    expect(await store.readMessage(expired)).toBeNull();
    expect(await approve(ctx, expired, "test")).toEqual({ outcome: "refused", state: "expired" });
    await Bun.sleep(1500);
    expect(sinkCopies(`Hello ${m}`)).toHaveLength(0);
    expect(sinkCopies(`Hello ${m2}`)).toHaveLength(0);
  });

  test("deny after its time but before the expiry check: expired, not denied (its row says so)", async () => {
    const m = marker();
    const id = heldId((await send(`z-${m}@outside.example`, m)).text);
    store.state.db.query("UPDATE approvals SET expires = ? WHERE id = ?").run(Date.now() - 1, id);
    expect(store.deny(id, "test", null)).toBe("expired");
    expect(store.row(id)!.state).toBe("held");
    expect(await deny(ctx, id, "test", "no")).toEqual({ outcome: "refused", state: "expired" });
    expect(store.row(id)!.state).toBe("expired");
    expect(await store.readMessage(id)).toBeNull();
    const rows = (await proxy.rows()).filter((r) => r.command.startsWith("APPROVAL EXPIRED") || r.command === "DENY");
    expect(
      rows.filter((r) => r.target?.includes(id) || JSON.stringify(r.detail).includes(id)).map((r) => r.command),
    ).toEqual(["APPROVAL EXPIRED"]);
  });

  test("a link marked used by a decision the process never finished works again at the next start", async () => {
    const m = marker();
    const id = heldId((await send(`w-${m}@outside.example`, m)).text);
    const other = heldId((await send(`v-${m}@outside.example`, `${m}-2`)).text);
    expect(store.useToken(id)).toBe(true);
    expect(store.tokenUsed(id)).toBe(true);
    // A decided message's link stays used: only held ones are given back.
    expect(store.useToken(other)).toBe(true);
    expect(await deny(ctx, other, "test", null)).toEqual({ outcome: "denied", state: "held" });
    expect(store.releaseUsedTokens()).toBe(1);
    expect(store.tokenUsed(id)).toBe(false);
    expect(store.tokenUsed(other)).toBe(true);
    expect(store.releaseUsedTokens()).toBe(0);
    await deny(ctx, id, "test", null);
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

  test("an upstream login that fails sends nothing and leaves the message held; a later approve sends it", async () => {
    const m = marker();
    const id = heldId((await send(`v-${m}@outside.example`, m)).text);
    const smtp = proxy.config.smtp!;
    // Nothing listens on the port freePort found.
    const unreachable: ApprovalContext = {
      ...ctx,
      config: { ...proxy.config, smtp: { ...smtp, upstreamAddr: { host: "127.0.0.1", port: await freePort() } } },
    };
    const result = await approve(unreachable, id, "test");
    expect(result.outcome).toBe("not-sent");
    expect(store.row(id)!.state).toBe("held");
    expect(await store.readMessage(id)).not.toBeNull();
    expect(await approve(ctx, id, "test")).toMatchObject({ outcome: "sent" });
    await waitForSink(`Hello ${m}`, 1);
    const rows = (await proxy.rows()).filter((r) => r.target === id).map((r) => [r.command, r.decision]);
    expect(rows).toEqual([
      ["DATA", "ask"],
      ["APPROVE", "error"],
      ["APPROVE", "allow"],
      ["APPROVAL SENT", "allow"],
    ]);
  });

  test("a sender identity a reload removed: approve sends nothing and leaves the message held", async () => {
    const m = marker();
    const alias = `alias-${m}@corp.test`;
    const aliased = await startTestProxy({
      rules: RULES,
      approvals: true,
      smtp: `identities = ["${alias}"]`,
    });
    try {
      const c = await loggedIn(aliased.port);
      expect((await c.command(`MAIL FROM:<${alias}>`)).code).toBe(250);
      expect((await c.command(`RCPT TO:<id-${m}@outside.example>`)).code).toBe(250);
      expect((await c.command("DATA")).code).toBe(354);
      c.write(dataPayload(message({ From: alias, To: `id-${m}@outside.example`, Subject: m }, `Hello ${m}\n`)));
      const id = heldId((await c.reply()).lines.join(" "));
      await c.command("QUIT");
      const held = aliased.approvals!;
      const base = cliContext(aliased);
      // The config in force no longer has the alias (as after a reload): refused before any upstream login.
      const reloaded: ApprovalContext = {
        ...base,
        config: { ...aliased.config, smtp: { ...aliased.config.smtp!, identities: [] } },
      };
      const result = await approve(reloaded, id, "test");
      expect(result).toEqual({
        outcome: "not-sent",
        reason: `the sender ${alias} is no longer one of this account's identities`,
      });
      expect(held.row(id)!.state).toBe("held");
      expect(await held.readMessage(id)).not.toBeNull();
      // With the identity back, the same message is sent.
      expect(await approve(base, id, "test")).toMatchObject({ outcome: "sent" });
      await waitForSink(`Hello ${m}`, 1);
      const rows = (await aliased.rows()).filter((r) => r.target === id);
      expect(rows.map((r) => [r.command, r.decision])).toEqual([
        ["DATA", "ask"],
        ["APPROVE", "error"],
        ["APPROVE", "allow"],
        ["APPROVAL SENT", "allow"],
      ]);
      expect(rows[1]!.reason).toContain(`not sent, still held: the sender ${alias} is no longer one of`);
    } finally {
      await aliased.close();
    }
  });

  test("an author a reload removed from the identities: approve sends nothing, the message stays held", async () => {
    const m = marker();
    const alias = `author-${m}@corp.test`;
    const aliased = await startTestProxy({ rules: RULES, approvals: true, smtp: `identities = ["${alias}"]` });
    try {
      const c = await loggedIn(aliased.port);
      // The reverse path is the login, which stays an identity; only the header names the alias.
      expect((await c.command("MAIL FROM:<alice@mailgator.test>")).code).toBe(250);
      expect((await c.command(`RCPT TO:<author-${m}@outside.example>`)).code).toBe(250);
      expect((await c.command("DATA")).code).toBe(354);
      c.write(dataPayload(message({ From: `Desk <${alias}>`, Subject: m }, `Hello ${m}\n`)));
      const id = heldId((await c.reply()).lines.join(" "));
      await c.command("QUIT");
      const base = cliContext(aliased);
      const reloaded: ApprovalContext = {
        ...base,
        config: { ...aliased.config, smtp: { ...aliased.config.smtp!, identities: [] } },
      };
      expect(await approve(reloaded, id, "test")).toEqual({
        outcome: "not-sent",
        reason: `the header names <${alias}>, not one of this account's identities any more`,
      });
      expect(aliased.approvals!.row(id)!.state).toBe("held");
      expect(await approve(base, id, "test")).toMatchObject({ outcome: "sent" });
      await waitForSink(`Hello ${m}`, 1);
    } finally {
      await aliased.close();
    }
  });

  test("after a reload to vault mode a message held in pass-through mode is not sent: still held", async () => {
    const m = marker();
    const id = heldId((await send(`vault-${m}@outside.example`, m)).text);
    // Only the number of agents matters here: any [[agents]] entry puts the config in vault mode.
    const agent = { name: "bot" } as unknown as (typeof proxy.config.agents)[number];
    const vaultNow: ApprovalContext = { ...ctx, config: { ...proxy.config, agents: [agent] } };
    expect(await approve(vaultNow, id, "test")).toEqual({
      outcome: "not-sent",
      reason: "the proxy now takes agent tokens only: a message held in pass-through mode is not sent",
    });
    expect(store.row(id)!.state).toBe("held");
    expect(await deny(ctx, id, "test", null)).toMatchObject({ outcome: "denied" });
  });

  test("vault mode: a held message of an agent a reload removed, or whose token it changed, is not sent", async () => {
    const token = "mg_approvals-vault-agent-token-0123456789";
    const vault = await startTestProxy({ rules: vaultConfig(RULES, token), approvals: true });
    try {
      const m = marker();
      const user = upstreams().users[0]!;
      const c = await vaultClient(vault.port, token);
      expect((await c.command(`MAIL FROM:<${user.user}>`)).code).toBe(250);
      expect((await c.command(`RCPT TO:<agent-${m}@outside.example>`)).code).toBe(250);
      expect((await c.command("DATA")).code).toBe(354);
      c.write(dataPayload(message({ From: user.user, Subject: m }, `Hello ${m}\n`)));
      const id = heldId((await c.reply()).lines.join(" "));
      await c.command("QUIT");
      const base = cliContext(vault);
      const removed: ApprovalContext = { ...base, config: { ...vault.config, agents: [] } };
      expect(await approve(removed, id, "test")).toEqual({
        outcome: "not-sent",
        reason: "the agent bot is no longer configured",
      });
      expect(vault.approvals!.row(id)!.state).toBe("held");
      // The same agent with another token (a rotation after a leak): its sessions end at the reload, and what it
      // held before is not sent either.
      const rotated: ApprovalContext = {
        ...base,
        config: {
          ...vault.config,
          agents: vault.config.agents.map((a) => ({ ...a, tokenHash: `sha256:${"0".repeat(64)}` })),
        },
      };
      expect(await approve(rotated, id, "test")).toEqual({
        outcome: "not-sent",
        reason: "the agent bot's token changed after the message was held",
      });
      expect(vault.approvals!.row(id)!.state).toBe("held");
      expect(vault.approvals!.details(id)!.tokenHash).toBe(vault.config.agents[0]!.tokenHash);
      expect(await approve(base, id, "test")).toMatchObject({ outcome: "sent" });
      await waitForSink(`Hello ${m}`, 1);
    } finally {
      await vault.close();
    }
  });

  test("a message left sending by a dead process is never sent again: needs-check", async () => {
    const m = marker();
    const id = heldId((await send(`w-${m}@outside.example`, m)).text);
    // The claim committed; its process (above Linux's largest pid, so gone) died before sending.
    expect(store.claim(id, "crashed", Date.now(), GONE).ok).toBe(true);
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
    expect((await store.readMessage(id))!.message.toString()).toContain(secretLine);
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
    await deny(ctx, id, "test", null);
  });
});

describe("when the audit log cannot be written (docs/approvals.md)", () => {
  test("approve with a full log: nothing sent or changed, the caller is told why; sent once it recovers", async () => {
    const audit = await fullAuditLog(join(proxy.dir, "full-approve.db"));
    const full: ApprovalContext = { ...ctx, audit };
    try {
      const m = marker();
      const id = heldId((await send(`full-${m}@outside.example`, m)).text);
      expect(await approve(full, id, "test")).toEqual({ outcome: "not-sent", reason: UNAVAILABLE });
      expect(store.row(id)!.state).toBe("held");
      expect(store.row(id)!.decidedBy).toBeNull();
      expect(await store.readMessage(id)).not.toBeNull();
      await Bun.sleep(1000);
      expect(sinkCopies(`Hello ${m}`)).toHaveLength(0);

      await freeSpace(audit);
      expect(await approve(full, id, "test")).toMatchObject({ outcome: "sent" });
      await waitForSink(`Hello ${m}`, 1);
      expect(await rowsAbout(audit, id)).toEqual([
        ["APPROVE", "allow"],
        ["APPROVAL SENT", "allow"],
      ]);
    } finally {
      await audit.close().catch(() => {});
    }
  });

  test("the APPROVE row cannot be written: the replay stops before its end of data, held again", async () => {
    const { log: audit, failing } = syncFailingLog(join(proxy.dir, "sync-approve.db"));
    const failingCtx: ApprovalContext = { ...ctx, audit };
    try {
      const m = marker();
      const id = heldId((await send(`sync-${m}@outside.example`, m)).text);
      // Healthy when the approval starts; the fdatasync of its APPROVE row fails (docs/audit.md "Failure").
      failing.on = true;
      expect(audit.healthy).toBe(true);
      expect(await approve(failingCtx, id, "test")).toEqual({ outcome: "not-sent", reason: UNAVAILABLE });
      expect(audit.healthy).toBe(false);
      expect(store.row(id)!.state).toBe("held");
      expect(await store.readMessage(id)).not.toBeNull();
      await Bun.sleep(1500);
      expect(sinkCopies(`Hello ${m}`)).toHaveLength(0);

      failing.on = false;
      await healthyAgain(audit);
      expect(await approve(failingCtx, id, "test")).toMatchObject({ outcome: "sent" });
      await waitForSink(`Hello ${m}`, 1);
      await Bun.sleep(1000);
      expect(sinkCopies(`Hello ${m}`)).toHaveLength(1);
      // The first APPROVE row was committed, only its fdatasync failed: it stays, with no APPROVAL SENT of its own,
      // and its follow-up row says it was not carried out (docs/audit.md "Failure").
      expect(await rowsAbout(audit, id)).toEqual([
        ["APPROVE", "allow"],
        ["APPROVE", "error"],
        ["APPROVE", "allow"],
        ["APPROVAL SENT", "allow"],
      ]);
    } finally {
      await audit.close().catch(() => {});
    }
  });
});

describe("deny, expiry and the start-up check with a full audit log (docs/approvals.md)", () => {
  let audit: AuditLog;
  let full: ApprovalContext;
  beforeAll(async () => {
    audit = await fullAuditLog(join(proxy.dir, "full-decide.db"));
    full = { ...ctx, audit };
  });
  afterAll(async () => {
    await audit.close().catch(() => {});
  });

  test("deny, expire and recover change nothing while it is full; once it recovers, each has its row", async () => {
    const m = marker();
    const denied = heldId((await send(`deny-${m}@outside.example`, m)).text);
    const expiring = [marker(), marker()];
    const expired = [];
    for (const e of expiring) expired.push(heldId((await send(`exp-${e}@outside.example`, e)).text));
    const stuck = heldId((await send(`stuck-${m}@outside.example`, `${m}-stuck`)).text);
    expect(store.claim(stuck, "crashed", Date.now(), GONE).ok).toBe(true); // a process died during its replay
    const due = Math.max(...expired.map((id) => store.row(id)!.expires));
    expect(audit.healthy).toBe(false);

    expect(await deny(full, denied, "test", "no")).toEqual({ outcome: "not-denied", reason: UNAVAILABLE });
    expect(expireDue(full, due)).toEqual([]);
    expect(recover(full)).toEqual([]);
    for (const id of [denied, ...expired]) {
      expect(store.row(id)!.state).toBe("held");
      expect(await store.readMessage(id)).not.toBeNull();
    }
    expect(store.row(stuck)!.state).toBe("sending");
    // Nothing to deny while it is full is still told as before.
    expect(await deny(full, "0".repeat(32), "test", null)).toEqual({ outcome: "refused", state: "unknown" });

    await freeSpace(audit);
    expect(await deny(full, denied, "test", "no")).toEqual({ outcome: "denied", state: "held" });
    expect(expireDue(full, due).map((r) => r.id)).toEqual(expect.arrayContaining(expired));
    expect(recover(full).map((r) => r.id)).toEqual([stuck]);
    expect(store.row(denied)!.state).toBe("denied");
    for (const id of expired) expect(store.row(id)!.state).toBe("expired");
    expect(store.row(stuck)!.state).toBe("needs-check");
    expect(await rowsAbout(audit, denied)).toEqual([["DENY", "deny"]]);
    for (const id of expired) expect(await rowsAbout(audit, id)).toEqual([["APPROVAL EXPIRED", "deny"]]);
    expect(await rowsAbout(audit, stuck)).toEqual([["APPROVAL NEEDS CHECK", "error"]]);
    await Bun.sleep(1000);
    for (const x of [m, ...expiring]) expect(sinkCopies(`Hello ${x}`)).toHaveLength(0);
  });

  test("the page: GET and a deny answer 503 and change nothing, the link is given back and works later", async () => {
    await fillAgain(audit);
    const server = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: (req): Promise<Response> => handler(req) });
    const origin = `http://127.0.0.1:${server.port}`;
    const handler = approvalPage({
      ...full,
      config: { ...proxy.config, approvals: { ...proxy.config.approvals, baseUrl: origin } },
    }).handle;
    try {
      const m = marker();
      const id = heldId((await send(`pagefull-${m}@outside.example`, m)).text);
      const token = store.token(store.row(id)!);
      const deny = () =>
        fetch(`${origin}/approvals/${id}`, {
          method: "POST",
          body: `t=${token}&action=deny&confirm=deny`,
          headers: { "content-type": "application/x-www-form-urlencoded", origin },
        });
      const view = await fetch(`${origin}/approvals/${id}?t=${token}`);
      expect(view.status).toBe(503);
      expect(await view.text()).not.toContain(`pagefull-${m}`);
      const refused = await deny();
      expect(refused.status).toBe(503);
      expect(await refused.text()).toContain("The message is still held");
      expect(store.row(id)!.state).toBe("held");
      expect(await store.readMessage(id)).not.toBeNull();
      expect(store.tokenUsed(id)).toBe(false);

      await freeSpace(audit);
      expect((await fetch(`${origin}/approvals/${id}?t=${token}`)).status).toBe(200);
      const ok = await deny();
      expect(ok.status).toBe(200);
      expect(store.row(id)!.state).toBe("denied");
      expect(await rowsAbout(audit, id)).toEqual([
        ["APPROVAL VIEWED", "ask"],
        ["DENY", "deny"],
      ]);
    } finally {
      server.stop(true);
    }
  });
});

describe('a held message\'s rows (docs/approvals.md "Holding")', () => {
  /** One send to an outside address on its own proxy; `beforeDot` runs once DATA is accepted. */
  async function sendOn(p: TestProxy, m: string, beforeDot: () => Promise<void> = async () => {}) {
    const c = await loggedIn(p.port);
    try {
      expect((await c.command("MAIL FROM:<alice@mailgator.test>")).code).toBe(250);
      expect((await c.command(`RCPT TO:<rows-${m}@outside.example>`)).code).toBe(250);
      expect((await c.command("DATA")).code).toBe(354);
      await beforeDot();
      c.write(dataPayload(message({ From: "alice@mailgator.test", Subject: `rows ${m}` }, `Hello ${m}\n`)));
      return await c.reply();
    } finally {
      await c.command("QUIT");
    }
  }

  test("are on disk when the agent gets its 250: which rule held it, for which recipient", async () => {
    // Rows only queued would wait a minute: the 250 must not wait for that.
    const slow = await startTestProxy({ rules: RULES, approvals: true, auditBatchMs: 60_000 });
    try {
      const m = marker();
      const r = await sendOn(slow, m);
      expect(r.code).toBe(250);
      const id = heldId(r.lines.join(" "));
      // Committed rows only, without a flush: what a crash right after the 250 would leave.
      const rows = slow.audit.query({ order: "asc" });
      expect(rows.filter((x) => x.target === id).map((x) => [x.command, x.decision, x.rule])).toEqual([
        ["DATA", "ask", "outside needs a manager"],
      ]);
      expect(rows.filter((x) => x.target === `rows-${m}@outside.example`).map((x) => [x.command, x.decision])).toEqual([
        ["RCPT TO", "ask"],
      ]);
      expect(slow.approvals!.row(id)!.state).toBe("held");
    } finally {
      await slow.close();
    }
  });

  test("that cannot be written: 451 and nothing held; held once the log recovers", async () => {
    const failing = syncFailingLog(join(proxy.dir, "hold-sync.db"));
    const p = await startTestProxy({ rules: RULES, approvals: true, wrapAudit: () => failing.log });
    try {
      const m = marker();
      // Healthy until the end of data: the commit of the held message's rows is the one whose fdatasync fails.
      const r = await sendOn(p, m, async () => {
        await failing.log.flush(); // the session's rows so far (its login) are on disk
        failing.failing.on = true;
      });
      expect(r.code).toBe(451);
      expect(r.lines.join(" ")).toContain("4.3.0 Audit log unavailable; nothing was sent");
      expect(p.approvals!.list()).toEqual([]);

      failing.failing.on = false;
      await healthyAgain(failing.log);
      const again = await sendOn(p, m);
      expect(again.code).toBe(250);
      expect(p.approvals!.list().map((x) => x.id)).toEqual([heldId(again.lines.join(" "))]);
      await Bun.sleep(1000);
      expect(sinkCopies(`Hello ${m}`)).toHaveLength(0);
    } finally {
      await p.close();
      await failing.log.close().catch(() => {});
    }
  });
});

/**
 * The rows on the id a message of `recipient` would have been held as (its end-of-data row names it), once both
 * are there: the `ask` row and the one that says why it was not held.
 */
async function rowsOfUnheld(p: TestProxy, recipient: string): Promise<string[][]> {
  const id = (await p.rows()).find((r) => r.command === "DATA" && r.reason.includes(recipient))!.target!;
  let about: string[][] = [];
  for (let i = 0; i < 100 && about.length < 2; i++, await Bun.sleep(20))
    about = (await p.rows()).filter((r) => r.target === id).map((r) => [r.command, r.decision, r.reason]);
  return about;
}

describe("a session a reload ends while its held message's rows go to disk", () => {
  test("holds nothing, asks no approver, and says so in a row", async () => {
    // The durable() of the end-of-data row waits until released: the reload comes in between.
    const reached = Promise.withResolvers<void>();
    const release = Promise.withResolvers<void>();
    const wrap = (log: AuditLog): AuditLog =>
      new Proxy(log, {
        get(target, key) {
          if (key === "durable")
            return async (ev: AuditEvent) => {
              const id = await target.durable(ev);
              if (ev.command === "DATA" && ev.decision === "ask") {
                reached.resolve();
                await release.promise;
              }
              return id;
            };
          const value = Reflect.get(target, key, target);
          return typeof value === "function" ? value.bind(target) : value;
        },
      });
    const asked: string[] = [];
    const p = await startTestProxy({
      rules: RULES,
      approvals: true,
      wrapAudit: wrap,
      onHeld: (row) => asked.push(row.id),
    });
    try {
      const m = marker();
      const c = await loggedIn(p.port);
      expect((await c.command("MAIL FROM:<alice@mailgator.test>")).code).toBe(250);
      expect((await c.command(`RCPT TO:<reload-${m}@outside.example>`)).code).toBe(250);
      expect((await c.command("DATA")).code).toBe(354);
      c.write(dataPayload(message({ From: "alice@mailgator.test", Subject: `reload ${m}` }, `Hello ${m}\n`)));
      await reached.promise;
      // A pass-through session ends when the upstream server changes (docs/operations.md "Reload").
      const smtp = p.config.smtp!;
      const next = { ...p.config, smtp: { ...smtp, upstreamAddr: { ...smtp.upstreamAddr, port: 1 } } };
      expect(p.proxy.prepareReload(next).commit()).toBe(1);
      // The 421 waits for the command under way (docs/operations.md "Reload"), which holds nothing: it answers the dot.
      await Bun.sleep(200);
      expect(asked).toEqual([]);
      release.resolve();
      const ended = await c.reply();
      expect([ended.code, ended.lines.join(" ")]).toEqual([
        421,
        "4.3.2 Configuration changed; this session ends, log in again",
      ]);
      await c.waitClosed();
      // The end-of-data row names the id it would have been held as; a second row on that id says it was not.
      expect(await rowsOfUnheld(p, `reload-${m}@`)).toEqual([
        ["DATA", "ask", `held for approval (managers): asked for reload-${m}@outside.example`],
        ["DATA", "error", "not held: the session ended (reload: the upstream server changed)"],
      ]);
      expect(p.approvals!.list()).toEqual([]);
      expect(asked).toEqual([]);
    } finally {
      release.resolve();
      await p.close();
    }
  });
});

describe('a held message stored in parts (docs/approvals.md "Limits")', () => {
  /** A body of lines of 76 characters, some starting with a dot, about `parts` parts in all. */
  function partsBody(parts: number): string {
    const line = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_+";
    const lines = Array.from({ length: Math.ceil((parts * HELD_PART_BYTES) / 78) }, (_, i) =>
      i % 1000 === 0 ? `.${line.slice(1)}` : line,
    );
    return `\n${lines.join("\n")}`;
  }

  /** Sends one message of `body` to `port` and gives back the client before the reply to its end of data. */
  async function sendUnanswered(port: number, to: string, m: string, body: string) {
    const c = await loggedIn(port);
    expect((await c.command("MAIL FROM:<alice@mailgator.test>")).code).toBe(250);
    expect((await c.command(`RCPT TO:<${to}>`)).code).toBe(250);
    expect((await c.command("DATA")).code).toBe(354);
    c.write(dataPayload(message({ From: "alice@mailgator.test", Subject: `stored ${m}` }, `Hello ${m}${body}\n`)));
    return c;
  }

  /** Calls `then` once, after the `n`th part (from 1) of any held message has been stored; counts the parts. */
  function afterPart(p: TestProxy, n: number, then: () => void): { parts: () => number } {
    const state = p.approvals!.state;
    const put = state.put.bind(state);
    let parts = 0;
    state.put = (kind, id, plaintext) => {
      put(kind, id, plaintext);
      if (kind === HELD_PART_KIND && ++parts === n) then();
    };
    return { parts: () => parts };
  }

  test("of several parts: held, approved, and delivered with the same bytes", async () => {
    const m = marker();
    const extra = partsBody(2.5);
    const outside = await send(`parts-${m}@outside.example`, m, extra);
    expect(outside.code).toBe(250);
    const id = heldId(outside.text);
    const parts = proxy
      .approvals!.state.db.query("SELECT COUNT(*) AS n FROM sealed WHERE kind = ? AND id LIKE ?")
      .get(HELD_PART_KIND, `${id}.%`) as { n: number };
    expect(parts.n).toBe(3);
    // Stored as the agent sent it, before dot-stuffing, octet for octet.
    expect((await store.readMessage(id))!.message.equals(Buffer.from(outside.message, "latin1"))).toBe(true);
    expect((await approve(ctx, id, "test")).outcome).toBe("sent");
    const copies = await waitForSink(`Hello ${m}`, 1);
    expect(bodyOf(copies[0]!.text.replace(/\r\n/g, "\n"))).toBe(`Hello ${m}\nsecond line ${extra}\n`);
    expect(proxy.approvals!.state.db.query("SELECT id FROM sealed WHERE id LIKE ?").all(`${id}%`)).toEqual([]);
  });

  test("a part missing: approve sends nothing and says why in a row; the message stays held; deny works", async () => {
    const m = marker();
    const outside = await send(`damaged-${m}@outside.example`, m, partsBody(1.5));
    const id = heldId(outside.text);
    store.state.delete(HELD_PART_KIND, `${id}.1`);
    const result = await approve(ctx, id, "test");
    expect(result).toEqual({
      outcome: "not-sent",
      reason: `the stored message cannot be read: held message ${id}: part 1 is missing or too long`,
    });
    expect(store.row(id)!.state).toBe("held");
    const rows = (await proxy.rows()).filter((r) => r.target === id).map((r) => [r.command, r.decision, r.reason]);
    expect(rows).toEqual([
      ["DATA", "ask", `held for approval (managers): asked for damaged-${m}@outside.example`],
      ["APPROVE", "error", `approved by test; not sent, still held: ${result.outcome === "not-sent" && result.reason}`],
    ]);
    expect(await deny(ctx, id, "test", "damaged")).toMatchObject({ outcome: "denied" });
    expect(store.state.db.query("SELECT id FROM sealed WHERE id LIKE ?").all(`${id}%`)).toEqual([]);
    expect(sinkCopies(`Hello ${m}`)).toHaveLength(0);
  });

  test("expired while approve reads it: refused, and one APPROVAL EXPIRED row, not two", async () => {
    const m = marker();
    const id = heldId((await send(`expiring-${m}@outside.example`, m, partsBody(2.5))).text);
    // The expiry check of the proxy runs while approve reads the message, between two of its parts.
    const approving = approve(ctx, id, "test");
    await new Promise((resolve) => setImmediate(resolve));
    expect(expireDue(ctx, store.row(id)!.expires + 1).map((r) => r.id)).toEqual([id]);
    expect(await approving).toEqual({ outcome: "refused", state: "expired" });
    const rows = (await proxy.rows()).filter((r) => r.target === id).map((r) => [r.command, r.decision]);
    expect(rows).toEqual([
      ["DATA", "ask"],
      ["APPROVAL EXPIRED", "deny"],
    ]);
    expect(sinkCopies(`Hello ${m}`)).toHaveLength(0);
  });

  test("a session that ends while its message is stored: it stops, no approver asked, a row says so", async () => {
    const asked: string[] = [];
    const p = await startTestProxy({ rules: RULES, approvals: true, onHeld: (row) => asked.push(row.id) });
    try {
      // The reload that ends the session comes once the second of three parts is stored.
      const stored = afterPart(p, 2, () => {
        const smtp = p.config.smtp!;
        const next = { ...p.config, smtp: { ...smtp, upstreamAddr: { ...smtp.upstreamAddr, port: 1 } } };
        expect(p.proxy.prepareReload(next).commit()).toBe(1);
      });
      const m = marker();
      const c = await sendUnanswered(p.port, `stored-${m}@outside.example`, m, partsBody(2.5));
      const ended = await c.reply();
      expect([ended.code, ended.lines.join(" ")]).toEqual([
        421,
        "4.3.2 Configuration changed; this session ends, log in again",
      ]);
      await c.waitClosed();
      expect(await rowsOfUnheld(p, `stored-${m}@`)).toEqual([
        ["DATA", "ask", `held for approval (managers): asked for stored-${m}@outside.example`],
        ["DATA", "error", "not held: the session ended while it was stored (reload: the upstream server changed)"],
      ]);
      // The third part was never written.
      expect(stored.parts()).toBe(2);
      expect(p.approvals!.list()).toEqual([]);
      // Nothing of it is left: no record of its details, no part.
      expect(p.approvals!.state.db.query("SELECT kind, id FROM sealed WHERE kind LIKE 'held%'").all()).toEqual([]);
      expect(asked).toEqual([]);
    } finally {
      await p.close();
    }
  });

  test("shutdown while a message is stored: held and answered within the grace, then 421; rows on disk", async () => {
    const p = await startTestProxy({ rules: RULES, approvals: true });
    let closing: Promise<void> | null = null;
    afterPart(p, 1, () => {
      closing = p.proxy.close();
    });
    const m = marker();
    const c = await sendUnanswered(p.port, `shutdown-${m}@outside.example`, m, partsBody(12));
    // The send under way gets its own answer first (docs/reliability.md "Shutdown"), then the session ends.
    const answer = await c.reply();
    expect(answer.code).toBe(250);
    const id = heldId(answer.lines.join(" "));
    const ended = await c.reply();
    expect([ended.code, ended.lines.join(" ")]).toEqual([421, "4.3.2 Mailgator is shutting down"]);
    await c.waitClosed();
    // As serve does: once the proxy is closed, the audit log closes; a row queued after that would be lost.
    await closing!;
    await p.audit.close();
    const log = AuditLog.open(join(p.dir, "audit.db"), { readonly: true });
    try {
      const rows = log.query({ order: "asc" });
      expect(rows.filter((r) => r.target === id).map((r) => [r.command, r.decision, r.reason])).toEqual([
        ["DATA", "ask", `held for approval (managers): asked for shutdown-${m}@outside.example`],
      ]);
      expect(p.approvals!.list().map((r) => [r.id, r.state])).toEqual([[id, "held"]]);
      expect((await p.approvals!.readMessage(id))?.message.toString("latin1")).toContain(`Hello ${m}`);
    } finally {
      await log.close();
      p.approvals!.state.close();
      rmSync(p.dir, { recursive: true, force: true });
    }
  });

  test("parts a stopped process left are removed at the next start, each with a row: nothing held", async () => {
    const orphan = "0123456789abcdef".repeat(2);
    store.state.put(HELD_PART_KIND, `${orphan}.0`, Buffer.from("the first part of a message never recorded"));
    // As old as a store under way never is (ORPHAN_PART_AGE_MS).
    store.state.db
      .query("UPDATE sealed SET updated = 0 WHERE kind = ? AND id LIKE ?")
      .run(HELD_PART_KIND, `${orphan}.%`);
    expect(recover(ctx)).toEqual([]);
    expect(store.state.db.query("SELECT id FROM sealed WHERE id LIKE ?").all(`${orphan}%`)).toEqual([]);
    let about: string[][] = [];
    for (let i = 0; i < 100 && about.length === 0; i++, await Bun.sleep(20))
      about = (await proxy.rows()).filter((r) => r.target === orphan).map((r) => [r.command, r.decision, r.reason]);
    expect(about).toEqual([["DATA", "error", ORPHAN_REASON]]);
  });
});

describe('what approvers see (docs/approvals.md "What approvers see")', () => {
  /** Sends `raw` (CRLF lines, octets as they are) from alice to an outside address over 8BITMIME: held; its id. */
  async function holdRaw(to: string, raw: Buffer): Promise<string> {
    const c = await loggedIn(proxy.port);
    expect((await c.command("MAIL FROM:<alice@mailgator.test> BODY=8BITMIME")).code).toBe(250);
    expect((await c.command(`RCPT TO:<${to}>`)).code).toBe(250);
    expect((await c.command("DATA")).code).toBe(354);
    c.write(Buffer.concat([raw, Buffer.from("\r\n.\r\n")]));
    const r = await c.reply();
    await c.command("QUIT");
    return heldId(r.lines.join(" "));
  }

  /** `mailgator approvals show ID`'s output, run on the proxy's state database. */
  async function shown(id: string): Promise<string> {
    const file = join(proxy.dir, "show.toml");
    writeFileSync(
      file,
      `[audit]\npath = "${proxy.config.audit.path}"\n\n[state]\npath = "${proxy.config.state.path}"\n` +
        `secrets_file = "${join(proxy.dir, "secrets.key")}"\n`,
    );
    const out: string[] = [];
    expect(await approvals({ argv: ["show", id, "-c", file], out: (t) => out.push(t), env: {} })).toBe(0);
    return out.join("\n");
  }

  /** The approval page's HTML for `id` (a GET changes nothing). */
  async function pageOf(id: string): Promise<string> {
    const r = await approvalPage(ctx).handle(
      new Request(`http://127.0.0.1:1/approvals/${id}?t=${store.token(store.row(id)!)}`),
    );
    expect(r.status).toBe(200);
    return r.text();
  }

  const head = (m: string, fields: string) =>
    `From: alice@mailgator.test\r\nTo: see-${m}@outside.example\r\n${fields}\r\nMessage-ID: <${m}@mailgator.test>\r\n`;

  test("a Subject with whitespace before its colon is the subject the rules read, not '(none)'", async () => {
    const m = marker();
    const id = await holdRaw(
      `see-${m}@outside.example`,
      Buffer.from(`${head(m, `Subject : Wire 1M USD ${m}`)}\r\nhi\r\n`),
    );
    const text = await shown(id);
    expect(text).toContain(`\nsubject: Wire 1M USD ${m}\n`);
    expect(text).not.toContain("(none)");
    expect(store.details(id)!.preview.subject).toBe(`Wire 1M USD ${m}`);
    expect(await pageOf(id)).toContain(`<dt>Subject</dt><dd>Wire 1M USD ${m}</dd>`);
  });

  test("two Subject fields: shown as unreadable, each as written, never as one of them alone", async () => {
    const m = marker();
    const fields = `Subject: Lunch ${m}\r\nSubject: Wire 1M USD ${m}`;
    const id = await holdRaw(`see-${m}@outside.example`, Buffer.from(`${head(m, fields)}\r\nhi\r\n`));
    const text = await shown(id);
    const line = text.split("\n").find((l) => l.startsWith("subject: "));
    expect(line).toBe(
      `subject: UNREADABLE (2 Subject fields; readers differ on which they show); as written: "Lunch ${m}", ` +
        `"Wire 1M USD ${m}"`,
    );
    expect(store.details(id)!.preview.subject).toBeNull();
    const html = await pageOf(id);
    expect(html).toContain("<dt>Subject</dt><dd>UNREADABLE (2 Subject fields;");
    expect(html).toContain(`&quot;Wire 1M USD ${m}&quot;`);
  });

  test("8BITMIME: a UTF-8 subject and text are shown as UTF-8, an octet that is not UTF-8 as U+FFFD", async () => {
    const m = marker();
    const raw = Buffer.concat([
      Buffer.from(`${head(m, `Subject: Überweisung ${m}`)}\r\nGrüße ${m}\r\nbad `, "utf8"),
      Buffer.from([0xff]),
      Buffer.from(" octet\r\n"),
    ]);
    const id = await holdRaw(`see-${m}@outside.example`, raw);
    const text = await shown(id);
    expect(text).toContain(`\nsubject: Überweisung ${m}\n`);
    expect(text).toContain(`\n| Grüße ${m}\n| bad \uFFFD octet`);
    const html = await pageOf(id);
    expect(html).toContain(`<dd>Überweisung ${m}</dd>`);
    expect(html).toContain(`Grüße ${m}\nbad \uFFFD octet`);
  });

  test("a base64 body and an HTML part beside the plain one: shown decoded, each under its type", async () => {
    const m = marker();
    const secret = `Wire 1M USD to eve, Grüße ${m}`;
    const base64 = Buffer.from(`Hello Eve,\n${secret}\n`).toString("base64");
    const single = await holdRaw(
      `see-${m}@outside.example`,
      Buffer.from(
        `${head(m, `Subject: Lunch ${m}`)}MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n` +
          `Content-Transfer-Encoding: base64\r\n\r\n${base64}\r\n`,
      ),
    );
    const text = await shown(single);
    expect(text.endsWith(`\n| [text/plain]\n| Hello Eve,\n| ${secret}`)).toBe(true);
    expect(text).not.toContain(base64);
    expect(text).not.toContain(MORE_TEXT);
    expect(await pageOf(single)).toContain(`<pre>[text/plain]\nHello Eve,\n${secret}</pre>`);
    // What was approved is what was shown: Postfix delivers the same base64 body.
    expect((await approve(ctx, single, "test")).outcome).toBe("sent");
    expect(bodyOf((await waitForSink(base64, 1))[0]!.text).trim()).toBe(base64);

    const html = Buffer.from(`<p>The customer list is attached ${m}</p>`).toString("base64");
    const alternative = await holdRaw(
      `see-${m}@outside.example`,
      Buffer.from(
        `${head(m, `Subject: Lunch ${m}`)}MIME-Version: 1.0\r\n` +
          "Content-Type: multipart/alternative; boundary=a\r\n\r\n" +
          `--a\r\nContent-Type: text/plain\r\n\r\nLunch on Friday ${m}\r\n` +
          `--a\r\nContent-Type: text/html\r\nContent-Transfer-Encoding: base64\r\n\r\n${html}\r\n--a--\r\n`,
      ),
    );
    const both = await shown(alternative);
    expect(
      both.endsWith(
        `\n| [text/plain]\n| Lunch on Friday ${m}\n| [text/html]\n| <p>The customer list is attached ${m}</p>`,
      ),
    ).toBe(true);
    expect(await pageOf(alternative)).toContain(
      `[text/html]\n&lt;p&gt;The customer list is attached ${m}&lt;/p&gt;</pre>`,
    );
  });

  test("attachments: every part the inspector read, names in RFC 2231 sections too, no decoy", async () => {
    const m = marker();
    const raw = Buffer.from(
      `${head(m, `Subject: Holiday ${m}`)}Content-Type: multipart/mixed; boundary=b\r\n\r\n` +
        `--b\r\n\r\nPhotos ${m}\r\n--b\r\nContent-Disposition: attachment; filename="holiday.jpg"\r\n\r\n/9j/\r\n` +
        `--b\r\nContent-Type: text/csv\r\nContent-Disposition: attachment; filename*0="customer-db"; ` +
        `filename*1=".csv"\r\n\r\nname,card\r\n--b--\r\n`,
    );
    const id = await holdRaw(`see-${m}@outside.example`, raw);
    expect(await pageOf(id)).toContain("<dt>Attachments</dt><dd>holiday.jpg, customer-db.csv</dd>");
    expect(await shown(id)).toContain("attachments: holiday.jpg, customer-db.csv");
    // Text attachments' lines are shown too (docs/approvals.md "What approvers see"); holiday.jpg has no Content-Type,
    // so it is text/plain (RFC 2045 §5.2).
    expect(await shown(id)).toEndWith(
      `| [text/plain]\n| Photos ${m}\n| [text/plain attachment]\n| /9j/\n| [text/csv attachment]\n| name,card`,
    );
    expect(await pageOf(id)).toContain("[text/csv attachment]\nname,card</pre>");
  });

  test("the upstream's refusal on the page of a decided message is cleaned too", async () => {
    const m = marker();
    const id = await holdRaw(`see-${m}@outside.example`, Buffer.from(`${head(m, `Subject: r ${m}`)}\r\nhi\r\n`));
    const token = store.token(store.row(id)!);
    store.state.db.query("UPDATE approvals SET state = 'sending' WHERE id = ?").run(id);
    store.sent(id, false, `550 5.7.1 \u202eno\x1b[2K ${m}`);
    const r = await approvalPage(ctx).handle(new Request(`http://127.0.0.1:1/approvals/${id}?t=${token}`));
    expect(r.status).toBe(409);
    const html = await r.text();
    expect(html).toContain(`upstream server refused it: 550 5.7.1 \uFFFDno\uFFFD[2K ${m}`);
    expect(html).not.toContain("\u202e");
  });

  test("the page shows a bidirectional override or a control character as U+FFFD, as the notices do", async () => {
    const m = marker();
    const raw = Buffer.from(
      `${head(m, `Subject: Invoice \u202egpj.exe ${m}`)}Content-Type: multipart/mixed; boundary=b\r\n\r\n` +
        `--b\r\n\r\nLine \u202eone \x1b[2K${m}\r\n--b\r\n` +
        `Content-Disposition: attachment; filename="invoice\u202efdp.exe"\r\n\r\nTVqQ\r\n--b--\r\n`,
      "utf8",
    );
    const id = await holdRaw(`see-${m}@outside.example`, raw);
    const html = await pageOf(id);
    expect(html).not.toContain("\u202e");
    expect(html).not.toContain("\x1b");
    expect(html).toContain(`gpj.exe ${m}`);
    expect(html).toContain("invoice\uFFFDfdp.exe");
    expect(html).toContain(`Line \uFFFDone \uFFFD[2K${m}`);
  });
});

describe("the approval page", () => {
  test("GET changes nothing; POST from the page approves once; replayed, altered, cross-origin refused", async () => {
    // The page handler mounted on a loopback HTTP server; links point at it (base_url's origin is checked on POST).
    const server = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: (req): Promise<Response> => handler(req) });
    const origin = `http://127.0.0.1:${server.port}`;
    const config = { ...proxy.config, approvals: { ...proxy.config.approvals, baseUrl: origin } };
    const pageCtx: ApprovalContext = { ...ctx, config };
    const handler = approvalPage(pageCtx).handle;
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
      expect((await post(`t=${altered}&action=approve&confirm=approve`)).status).toBe(403);
      expect((await post(`t=${token}&action=approve&confirm=approve`, { origin: "http://evil.example" })).status).toBe(
        403,
      );
      expect((await post(`t=${token}&action=approve&confirm=approve`, {})).status).toBe(403);
      expect(store.row(id)!.state).toBe("held");
      await Bun.sleep(1000);
      expect(sinkCopies(`Hello ${m}`)).toHaveLength(0);

      const ok = await post(`t=${token}&action=approve&confirm=approve`);
      expect(ok.status).toBe(200);
      expect(await ok.text()).toContain("The message was sent.");
      await waitForSink(`Hello ${m}`, 1);
      const again = await post(`t=${token}&action=approve&confirm=approve`);
      expect(again.status).toBe(409);
      expect(await again.text()).toContain("already approved");
      expect((await fetch(link)).status).toBe(409);
      await Bun.sleep(1000);
      expect(sinkCopies(`Hello ${m}`)).toHaveLength(1);

      const m2 = marker();
      const late = heldId((await send(`late-${m2}@outside.example`, m2)).text);
      expireDue(ctx, store.row(late)!.expires);
      const expired = await fetch(`${origin}/approvals/${late}?t=${store.token(store.row(late)!)}`);
      expect(expired.status).toBe(410);
      expect(await expired.text()).toContain("expired before anyone decided");
    } finally {
      server.stop(true);
    }
  });

  test("a decision that throws on its way (the state database) gives the link back; it works afterwards", async () => {
    // As the admin listener does (src/admin/server.ts): a handler that throws is answered 500.
    const server = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      fetch: (req): Promise<Response> => handler(req),
      error: () => new Response("internal error", { status: 500 }),
    });
    const origin = `http://127.0.0.1:${server.port}`;
    const handler = approvalPage({
      ...ctx,
      config: { ...proxy.config, approvals: { ...proxy.config.approvals, baseUrl: origin } },
    }).handle;
    const storeDeny = store.deny;
    try {
      const m = marker();
      const id = heldId((await send(`throws-${m}@outside.example`, m)).text);
      const token = store.token(store.row(id)!);
      const post = () =>
        fetch(`${origin}/approvals/${id}`, {
          method: "POST",
          body: `t=${token}&action=deny&confirm=deny`,
          headers: { "content-type": "application/x-www-form-urlencoded", origin },
        });
      store.deny = () => {
        throw new Error("disk I/O error");
      };
      expect((await post()).status).toBe(500);
      expect(store.row(id)!.state).toBe("held");
      expect(store.tokenUsed(id)).toBe(false);
      store.deny = storeDeny;
      expect((await post()).status).toBe(200);
      expect(store.row(id)!.state).toBe("denied");
    } finally {
      store.deny = storeDeny;
      server.stop(true);
    }
  });

  test("sent, but its APPROVAL SENT row cannot be written: the page says so; the message stays sending", async () => {
    const server = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: (req): Promise<Response> => handler(req) });
    const origin = `http://127.0.0.1:${server.port}`;
    // The log as it is, but the APPROVAL SENT row is refused (as a full disk would refuse it at that moment).
    const audit = new Proxy(ctx.audit, {
      get(target, key) {
        if (key === "durable")
          return (ev: AuditEvent, opts?: { gate?: boolean }) =>
            ev.command === "APPROVAL SENT"
              ? Promise.reject(new Error("database or disk is full"))
              : target.durable(ev, opts);
        const value = Reflect.get(target, key, target);
        return typeof value === "function" ? value.bind(target) : value;
      },
    });
    const handler = approvalPage({
      ...ctx,
      audit,
      config: { ...proxy.config, approvals: { ...proxy.config.approvals, baseUrl: origin } },
    }).handle;
    try {
      const m = marker();
      const id = heldId((await send(`unrecorded-${m}@outside.example`, m)).text);
      const token = store.token(store.row(id)!);
      const res = await fetch(`${origin}/approvals/${id}`, {
        method: "POST",
        body: `t=${token}&action=approve&confirm=approve`,
        headers: { "content-type": "application/x-www-form-urlencoded", origin },
      });
      expect(res.status).toBe(200);
      const body = await res.text();
      expect(body).toContain("The message was sent.");
      expect(body).toContain("Its audit row could not be written: it stays marked as being sent");
      await waitForSink(`Hello ${m}`, 1);
      expect(store.row(id)!.state).toBe("sending");
    } finally {
      server.stop(true);
    }
  });

  test("behind a reverse proxy at a path (base_url with one): the page's form posts back under that path", async () => {
    // The admin listener serves /approvals/...; the reverse proxy serves it under /mail-admin and strips that.
    const prefix = "/mail-admin";
    const server = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      fetch: (req): Response | Promise<Response> => {
        const url = new URL(req.url);
        if (!url.pathname.startsWith(`${prefix}/`)) return new Response("not here", { status: 404 });
        url.pathname = url.pathname.slice(prefix.length);
        return handler(new Request(url.href, req));
      },
    });
    const base = `http://127.0.0.1:${server.port}${prefix}`;
    const config = { ...proxy.config, approvals: { ...proxy.config.approvals, baseUrl: base } };
    const handler = approvalPage({ ...ctx, config }).handle;
    try {
      const m = marker();
      const id = heldId((await send(`prefix-${m}@outside.example`, m)).text);
      const link = `${base}/approvals/${id}?t=${store.token(store.row(id)!)}`;
      const html = await (await fetch(link)).text();
      // As a browser submits the form: its action resolved against the page's address, its fields as the body.
      const action = /<form method="post" action="([^"]+)">/.exec(html)?.[1];
      expect(action).toBeDefined();
      const target = new URL(action!, link);
      expect(target.pathname).toBe(`${prefix}/approvals/${id}`);
      const t = /name="t" value="([^"]+)"/.exec(html)![1]!;
      const posted = await fetch(target, {
        method: "POST",
        body: `t=${t}&action=approve&confirm=approve`,
        headers: { "content-type": "application/x-www-form-urlencoded", origin: new URL(base).origin },
      });
      expect(posted.status).toBe(200);
      expect(await posted.text()).toContain("The message was sent.");
      await waitForSink(`Hello ${m}`, 1);
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

describe("limits", () => {
  test(`${MAX_HELD_PER_AGENT} held messages of one login (MAX_HELD_PER_AGENT); one more gets 452`, async () => {
    const capped = await startTestProxy({ rules: RULES, approvals: true });
    const c = await loggedIn(capped.port);
    const login = upstreams().users[0]!.user;
    const hold = async (): Promise<{ code: number; text: string }> => {
      const m = marker();
      expect((await c.command("MAIL FROM:<alice@mailgator.test>")).code).toBe(250);
      expect((await c.command(`RCPT TO:<cap-${m}@outside.example>`)).code).toBe(250);
      expect((await c.command("DATA")).code).toBe(354);
      c.write(dataPayload(message({ From: "alice@mailgator.test", Subject: `cap ${m}` }, `Hello ${m}\n`)));
      const r = await c.reply();
      return { code: r.code, text: r.lines.join(" ") };
    };
    try {
      for (let i = 0; i < MAX_HELD_PER_AGENT; i++) expect((await hold()).code).toBe(250);
      expect(capped.approvals!.heldCount(login)).toBe(MAX_HELD_PER_AGENT);
      const over = await hold();
      expect([over.code, over.text]).toEqual([
        452,
        `4.3.1 ${MAX_HELD_PER_AGENT} messages already wait for approval; nothing was sent, try later`,
      ]);
      expect(capped.approvals!.list().filter((r) => r.state === "held")).toHaveLength(MAX_HELD_PER_AGENT);
      expect((await capped.rows()).findLast((r) => r.command === "DATA")).toMatchObject({
        decision: "deny",
        reason: `held for approval, but ${MAX_HELD_PER_AGENT} messages of this agent already wait for a decision`,
      });
      // A decided one frees its place.
      const first = capped.approvals!.list().find((r) => r.state === "held")!;
      const freed = cliContext(capped);
      expect(await deny(freed, first.id, "test", null)).toMatchObject({ outcome: "denied" });
      expect((await hold()).code).toBe(250);
    } finally {
      await c.command("QUIT");
      await capped.close();
    }
  });

  test("a send refused for MAX_HELD_PER_AGENT is not charged to the quota (docs/quotas.md)", async () => {
    // Room in the hour for the held messages and one more send: the two refused below must not use it.
    const quoted = await startTestProxy({
      rules: `${RULES}\n[[quotas]]\nname = "Default"\nsends_per_hour = ${MAX_HELD_PER_AGENT + 1}\n`,
      approvals: true,
    });
    const c = await loggedIn(quoted.port);
    const send = async (to: string): Promise<{ code: number; text: string }> => {
      const m = marker();
      expect((await c.command("MAIL FROM:<alice@mailgator.test>")).code).toBe(250);
      expect((await c.command(`RCPT TO:<${to.replace("*", m)}>`)).code).toBe(250);
      expect((await c.command("DATA")).code).toBe(354);
      c.write(dataPayload(message({ From: "alice@mailgator.test", Subject: `limit ${m}` }, `Hello ${m}\n`)));
      const r = await c.reply();
      return { code: r.code, text: r.lines.join(" ") };
    };
    try {
      for (let i = 0; i < MAX_HELD_PER_AGENT; i++) expect((await send("held-*@outside.example")).code).toBe(250);
      for (let i = 0; i < 2; i++) {
        expect(await send("over-*@outside.example")).toEqual({
          code: 452,
          text: `4.3.1 ${MAX_HELD_PER_AGENT} messages already wait for approval; nothing was sent, try later`,
        });
      }
      const refused = (await quoted.rows()).filter((r) => r.command === "DATA" && r.decision === "deny");
      expect(refused.map((r) => r.reason)).toEqual([
        `held for approval, but ${MAX_HELD_PER_AGENT} messages of this agent already wait for a decision`,
        `held for approval, but ${MAX_HELD_PER_AGENT} messages of this agent already wait for a decision`,
      ]);
      // The hour's last send goes; the one after it is over the quota.
      expect((await send("colleague-*@corp.test")).code).toBe(250);
      const over = await send("colleague-*@corp.test");
      expect(over.code).toBe(452);
      expect(over.text).toContain(`sends_per_hour ${MAX_HELD_PER_AGENT + 1} (used ${MAX_HELD_PER_AGENT + 1})`);
    } finally {
      await c.command("QUIT");
      await quoted.close();
    }
  });

  test("sessions of one login finishing their messages at once cannot pass MAX_HELD_PER_AGENT together", async () => {
    const capped = await startTestProxy({ rules: RULES, approvals: true });
    const login = upstreams().users[0]!.user;
    const sessions = await Promise.all([1, 2, 3, 4].map(() => loggedIn(capped.port)));
    try {
      const [first, ...others] = sessions as [RawClient, ...RawClient[]];
      const ready = async (c: RawClient): Promise<string> => {
        const m = marker();
        expect((await c.command("MAIL FROM:<alice@mailgator.test>")).code).toBe(250);
        expect((await c.command(`RCPT TO:<race-${m}@outside.example>`)).code).toBe(250);
        expect((await c.command("DATA")).code).toBe(354);
        return dataPayload(message({ From: "alice@mailgator.test", Subject: `race ${m}` }, `Hello ${m}\n`));
      };
      for (let i = 0; i < MAX_HELD_PER_AGENT - 1; i++) {
        first.write(await ready(first));
        expect((await first.reply()).code).toBe(250);
      }
      // One place left; three sessions end their DATA in the same moment, each waiting for its rows to reach disk
      // before it stores the message.
      const payloads = await Promise.all(others.map(ready));
      for (const [i, c] of others.entries()) c.write(payloads[i]!);
      const codes = (await Promise.all(others.map((c) => c.reply()))).map((r) => r.code).sort();
      expect(codes).toEqual([250, 452, 452]);
      expect(capped.approvals!.heldCount(login)).toBe(MAX_HELD_PER_AGENT);
    } finally {
      for (const c of sessions) await c.command("QUIT");
      await capped.close();
    }
  });
});
