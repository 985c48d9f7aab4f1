// Two processes on one state database (`mailgator serve` and `mailgator approvals approve`, or two refreshes) with a
// provider that retires each refresh token once it has rotated it (the local authorization server with rotation on):
// a refusal of the retired token must not mark the account while the database holds the valid pair that replaced it
// (docs/accounts.md "Staying logged in").
import { afterAll, expect, setDefaultTimeout, test } from "bun:test";
import { join } from "node:path";
import { AccountCredentials, AccountNeedsReauthorization } from "../../src/accounts/index.ts";
import { readStatus, readTokens, TOKEN_KIND } from "../../src/accounts/records.ts";
import type { AuditEvent } from "../../src/audit/index.ts";
import type { SealedStore } from "../../src/state/store.ts";
import { control, refresh, storeIssuedTokens, type TokenReply } from "../fixtures/oauth.ts";
import { tempRoot } from "../fixtures/temp.ts";
import { rotatingAccount as sharedRotatingAccount } from "./helpers.ts";

setDefaultTimeout(60_000);

const TMP = tempRoot("mg-rotation-race-");
const open: SealedStore[] = [];
afterAll(() => {
  for (const store of open) store.close();
});

const quiet = { error: () => {}, warn: () => {}, info: () => {} };

/** A user of the local server whose refresh tokens rotate, logged in; its config in a fresh folder. */
function rotatingAccount() {
  return sharedRotatingAccount({
    prefix: join(TMP, "race-"),
    agentToken: "agent-token-rotation-race-0123456789",
    open,
  });
}

/** `fetch` that records each refresh token sent, and runs `before` ahead of the request and `after` behind it. */
function recording(hooks: { before?: (rt: string) => Promise<void>; after?: (rt: string) => void } = {}) {
  const sent: string[] = [];
  const impl = (async (input: string | URL | Request, init?: RequestInit) => {
    const request = new Request(input as string, init);
    const form = new URLSearchParams(await request.clone().text());
    const rt = form.get("refresh_token");
    if (rt !== null) {
      sent.push(rt);
      await hooks.before?.(rt);
    }
    const response = await fetch(request);
    if (rt !== null) hooks.after?.(rt);
    return response;
  }) as typeof fetch;
  return { fetch: impl, sent };
}

test("the pair another process stores between this one's refusal and its mark is used; nothing is marked", async () => {
  const { config, login, connect } = await rotatingAccount();
  const storeA = connect();
  const storeB = connect();
  // Process A's write of the pair its refresh obtained; it lands at the first moment B does not hold the database's
  // write lock after B's own request was refused: right after a read B makes outside a transaction, or before B's
  // next transaction begins.
  let pendingWrite: (() => void) | null = null;
  const land = () => {
    const write = pendingWrite;
    pendingWrite = null;
    write?.();
  };
  const getText = storeB.getText.bind(storeB);
  storeB.getText = (kind: string, id: string) => {
    const text = getText(kind, id);
    if (kind === TOKEN_KIND && !storeB.db.inTransaction) land();
    return text;
  };
  const transaction = storeB.transaction.bind(storeB);
  storeB.transaction = <T>(fn: () => T): T => {
    land();
    return transaction(fn);
  };
  let fromA: TokenReply | null = null;
  const b = recording({
    // A's refresh with the same refresh token reaches the provider first: it rotates it and retires the old one.
    before: async (rt) => {
      if (fromA !== null) return;
      fromA = await refresh(rt);
      expect(fromA.status).toBe(200);
    },
    after: () => {
      if (fromA !== null && pendingWrite === null && readTokens(storeA, "mail")!.refreshToken === login.refresh_token)
        pendingWrite = () => storeIssuedTokens(storeA, "mail", fromA!);
    },
  });
  const audited: AuditEvent[] = [];
  const processB = new AccountCredentials({
    config,
    store: storeB,
    fetch: b.fetch,
    log: quiet,
    audit: (e) => audited.push(e),
  });
  const cached = await processB.credentialFor("mail");
  processB.reportRejected("mail", (cached as { accessToken: string }).accessToken);
  const credential = await processB.credentialFor("mail");
  // A's access token is good: B uses it, with no second token request.
  expect((credential as { accessToken: string }).accessToken).toBe((fromA as TokenReply | null)!.access_token!);
  expect(b.sent).toEqual([login.refresh_token as string]);
  expect(readStatus(storeA, "mail")!.state).toBe("ok");
  expect(audited).toEqual([]);
  // What the database holds is a live grant: the next refresh (any process) works with it.
  const stored = readTokens(storeA, "mail")!;
  expect(stored.refreshToken).not.toBe(login.refresh_token as string);
  expect((await refresh(stored.refreshToken!)).status).toBe(200);
});

test("tokens held in memory (their write failed) that are refused: the older stored token is not tried", async () => {
  const { user, config, login, connect } = await rotatingAccount();
  const store = connect();
  // Writes of the token record fail (a full disk) while `full`; the status row can still be written.
  let full = false;
  const put = store.put.bind(store);
  store.put = (...args: Parameters<typeof store.put>) => {
    if (full) throw new Error("database or disk is full");
    return put(...args);
  };
  const p = recording();
  const audited: AuditEvent[] = [];
  const c = new AccountCredentials({ config, store, fetch: p.fetch, log: quiet, audit: (e) => audited.push(e) });
  const first = (await c.credentialFor("mail")) as { accessToken: string };
  full = true;
  c.reportRejected("mail", first.accessToken);
  const second = (await c.credentialFor("mail")) as { accessToken: string };
  // Rotated: the new refresh token is in memory only; the stored one is retired by the provider.
  expect(readTokens(store, "mail")!.refreshToken).toBe(login.refresh_token as string);
  await control("revoke", { user });
  c.reportRejected("mail", second.accessToken);
  await expect(c.credentialFor("mail")).rejects.toBeInstanceOf(AccountNeedsReauthorization);
  // The refused token was the one from memory: the stored one is older (retired), not another process's newer one.
  expect(p.sent.length).toBe(2);
  expect(p.sent[0]).toBe(login.refresh_token as string);
  expect(p.sent[1]).not.toBe(login.refresh_token as string);
  expect(readStatus(store, "mail")!.state).toBe("needs-reauthorization");
  expect(audited.length).toBe(1);
});
