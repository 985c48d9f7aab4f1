/**
 * A link used by a POST whose decision the state database refused (read-only, here SQLite's `query_only`, as a
 * database on a disk remounted read-only refuses it): the decision changed nothing, and the release of the link
 * fails as well. docs/approvals.md "Deciding" step 2: the message stays held and decidable. Once the database takes
 * writes again, the same link decides it, without waiting for a restart of `serve`, and it is sent once. An approval
 * the database refused (the command's or the page's) has its `APPROVE` row of decision `error`, as one whose upstream
 * login failed: every decision is in the audit log.
 */

import { afterAll, beforeAll, expect, test } from "bun:test";
import { type ApprovalContext, approve } from "../../src/approvals/service.ts";
import { approvalPage } from "../../src/approvals/web.ts";
import { askManagersRules, holdMessage, marker, startTestProxy, type TestProxy, waitForSink } from "../smtp/helpers.ts";

const BASE = "http://127.0.0.1:1";

const RULES = askManagersRules(BASE);

let proxy: TestProxy;
let ctx: ApprovalContext;

beforeAll(async () => {
  proxy = await startTestProxy({ rules: RULES, approvals: true, upstreamTls: "none" });
  ctx = { config: proxy.config, store: proxy.approvals!, audit: proxy.audit, protocol: "smtp" };
});

afterAll(async () => {
  await proxy.close();
});

/** Holds a message to `to` marked `m`: its id. */
function hold(to: string, m: string): Promise<string> {
  return holdMessage(proxy.port, to, `release ${m}`, `Hello ${m}\n`);
}

function post(id: string, token: string, action: string): Request {
  const body = `t=${encodeURIComponent(token)}&action=${action}&confirm=${action}`;
  return new Request(`${BASE}/approvals/${id}`, {
    method: "POST",
    headers: {
      origin: BASE,
      "content-type": "application/x-www-form-urlencoded",
      "content-length": String(body.length),
    },
    body,
  });
}

test("a link whose decision and release the read-only database refused works again once it takes writes", async () => {
  const m = marker();
  const id = await hold(`someone-${m}@outside.example`, m);
  const store = ctx.store;
  const db = store.state.db;
  const token = store.token(store.row(id)!);
  const page = approvalPage(ctx);
  // The database turns read-only right after the link is marked used: the claim and the link's release both fail.
  const useToken = store.useToken.bind(store);
  Object.defineProperty(store, "useToken", {
    configurable: true,
    value: (which: string) => {
      const used = useToken(which);
      db.run("PRAGMA query_only = 1");
      return used;
    },
  });
  let first: string;
  try {
    const r = await page.handle(post(id, token, "approve"));
    first = `${r.status}`;
  } catch (e) {
    // serve's admin listener answers a handler that throws with a 500.
    first = `threw: ${(e as Error).message}`;
  } finally {
    Reflect.deleteProperty(store, "useToken");
    db.run("PRAGMA query_only = 0");
  }
  expect(first).not.toBe("200");
  expect(store.row(id)!.state).toBe("held");

  // The database takes writes again: the page shows the message, and the same link approves it, once.
  const shown = await page.handle(new Request(`${BASE}/approvals/${id}?t=${token}`));
  expect(shown.status).toBe(200);
  const second = await page.handle(post(id, token, "approve"));
  expect(second.status).toBe(200);
  expect(await second.text()).toContain("The message was sent.");
  expect(store.row(id)!.state).toBe("sent");
  expect((await waitForSink(m, 1)).length).toBe(1);
  const third = await page.handle(post(id, token, "approve"));
  expect(third.status).toBe(409);
});

test("an approval whose claim the read-only database refuses has its APPROVE row of decision error", async () => {
  const m = marker();
  const id = await hold(`other-${m}@outside.example`, m);
  const store = ctx.store;
  const db = store.state.db;
  const claim = store.claim.bind(store);
  Object.defineProperty(store, "claim", {
    configurable: true,
    value: (...args: Parameters<typeof claim>) => {
      db.run("PRAGMA query_only = 1");
      return claim(...args);
    },
  });
  let refused = "";
  try {
    await approve(ctx, id, "cli:review");
  } catch (e) {
    refused = (e as Error).message;
  } finally {
    Reflect.deleteProperty(store, "claim");
    db.run("PRAGMA query_only = 0");
  }
  expect(refused).toContain("readonly");
  expect(store.row(id)!.state).toBe("held");
  expect((await approve(ctx, id, "cli:review")).outcome).toBe("sent");
  expect((await waitForSink(m, 1)).length).toBe(1);

  const rows = (await proxy.rows()).filter((r) => r.target === id && r.command.startsWith("APPROV"));
  expect(rows.map((r) => `${r.command} ${r.decision}`)).toEqual([
    "APPROVE error",
    "APPROVE allow",
    "APPROVAL SENT allow",
  ]);
  expect(rows[0]!.reason).toStartWith("approved by cli:review; not sent, still held: the state database failed: ");
});
