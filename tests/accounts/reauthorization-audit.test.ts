// An account's "needs re-authorization" mark and its audit row go together (docs/accounts.md "When an account needs
// re-authorization", docs/audit.md "Failure"): a refresh refused while the audit log cannot be written marks
// nothing, so that the refusal is tried again, and marked with its row, once the log can take it. Against the local
// authorization server of the upstreams, with a real audit log whose fdatasync fails while the test says so.
import { afterAll, expect, setDefaultTimeout, test } from "bun:test";
import { join } from "node:path";
import {
  AccountCredentials,
  AccountNeedsReauthorization,
  AccountTemporarilyUnavailable,
} from "../../src/accounts/index.ts";
import { readStatus } from "../../src/accounts/records.ts";
import { loadConfig } from "../../src/config/index.ts";
import { SealedStore } from "../../src/state/store.ts";
import { sampleEvent } from "../audit/helpers.ts";
import { healthyAgain, syncFailingLog } from "../audit/unhealthy.ts";
import { createMailbox } from "../fixtures/index.ts";
import { control } from "../fixtures/oauth.ts";
import { Child, MAIN, oauthConfig } from "./helpers.ts";

setDefaultTimeout(120_000);

const open: { close(): void }[] = [];
afterAll(() => {
  for (const o of open) o.close();
});

async function oauthToken(c: AccountCredentials): Promise<string> {
  const credential = await c.credentialFor("main");
  if (credential.kind !== "oauth2") throw new Error("expected an oauth2 credential");
  return credential.accessToken;
}

test("a refresh refused while the audit log fails: not marked, retried, then marked with its row", async () => {
  const { user: name } = await createMailbox();
  const setup = oauthConfig(name);
  const child = new Child([MAIN, "account", "login", "main", "-c", setup.config]);
  const [url] = await child.waitFor(/http:\/\/127\.0\.0\.1:\d+\/authorize\?\S+/);
  expect((await fetch(url!)).status).toBe(200);
  expect(await child.exit()).toBe(0);

  const cfg = loadConfig(setup.config);
  const store = SealedStore.open(cfg.state.path, { secretsFile: cfg.state.secretsFile, env: {}, create: true })!;
  open.push(store);
  const { log: audit, failing } = syncFailingLog(join(setup.dir, "audit.db"));
  open.push({ close: () => void audit.close().catch(() => {}) });
  let now = Date.now();
  const quiet = { error: () => {}, warn: () => {}, info: () => {} };
  const c = new AccountCredentials({ config: cfg, store, audit: (e) => audit.record(e), log: quiet, now: () => now });
  const token = await oauthToken(c);

  // The audit log fails (an fdatasync error): unhealthy until a retry succeeds.
  failing.on = true;
  await expect(audit.durable(sampleEvent())).rejects.toThrow();
  expect(audit.healthy).toBe(false);
  await control("revoke", { user: name });
  c.reportRejected("main", token);
  // A temporary failure for the agent; the account is not marked, as its row could not be recorded.
  await expect(oauthToken(c)).rejects.toBeInstanceOf(AccountTemporarilyUnavailable);
  expect(readStatus(store, "main")?.state).not.toBe("needs-reauthorization");

  failing.on = false;
  await healthyAgain(audit);
  now += 10 * 60_000; // past the retry's backoff
  await expect(oauthToken(c)).rejects.toBeInstanceOf(AccountNeedsReauthorization);
  expect(readStatus(store, "main")?.state).toBe("needs-reauthorization");
  await audit.flush();
  const rows = audit.query({ protocol: "oauth2" });
  expect(rows).toHaveLength(1);
  expect(rows[0]!).toMatchObject({ decision: "error", command: "oauth-refresh", target: "main" });
  expect(rows[0]!.reason).toContain("mailgator account login main");
});
