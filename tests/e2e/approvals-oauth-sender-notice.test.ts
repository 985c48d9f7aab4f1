/**
 * The sender's result notice (`[approvals] notify_sender`, docs/approvals.md "notify_sender") sent by
 * `mailgator approvals approve|deny`, run as its own process beside `mailgator serve`, as an OAuth2 account: vault
 * mode, the agent's account and `notify_account` both `auth = "oauth2"` with tokens from the local authorization
 * server, which the real Postfix checks (docs/upstreams.md "OAuth2"). An agent's message is held through serve by
 * nodemailer; the command decides it, and the notice reaches the agent's mailbox, sent by the command with a token
 * from its own token manager: the notice account's cached token is made to expire first, so the command's login is
 * refused once, it asks the authorization server for a fresh token, and Postfix logs an XOAUTH2 or OAUTHBEARER login
 * of that account.
 */

import { Database } from "bun:sqlite";
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import nodemailer from "nodemailer";
import { freePort } from "../../scripts/upstreams/ports.ts";
import { SealedStore } from "../../src/state/store.ts";
import { createMailbox, heldId, sinkMessages, type TestMailbox, uniqueToken, upstreams } from "../fixtures/index.ts";
import {
  authorizationCodeFlow,
  control,
  oauthAccountToml,
  refreshCounters,
  storeIssuedTokens,
} from "../fixtures/oauth.ts";
import { tempRoot } from "../fixtures/temp.ts";
import { noticesIn, waitFor } from "../smtp/notice-reader.ts";
import { agentToml, serveConfig } from "./config.ts";
import { runCli, type Served, serveChild, stopServed } from "./serve-child.ts";

setDefaultTimeout(90_000);

/** Every folder this file makes is in here, removed after its tests. */
const TMP = tempRoot("mg-oauth-sender-notice-");
/** Long enough for a copy that should not arrive to have arrived. */
const SETTLE_MS = 3000;

const agentToken = `mg_${uniqueToken("sender-notice")}`;
let dir: string;
let file: string;
/** The agent's mailbox (account "mail"): the envelope sender, so the result notice's recipient. */
let sender: TestMailbox;
/** The mailbox of account "notices", which no agent uses: the notices are sent as it. */
let notices: TestMailbox;
let served: Served;
let smtpPort: number;

/** What `mailgator account login NAME` stores: the tokens of an authorization-code flow for `user`. */
async function login(account: string, user: string): Promise<void> {
  const tokens = await authorizationCodeFlow({ user });
  expect(tokens.status).toBe(200);
  const state = SealedStore.open(join(dir, "state.db"), {
    secretsFile: join(dir, "secrets.key"),
    env: {},
    create: true,
  })!;
  try {
    storeIssuedTokens(state, account, tokens);
  } finally {
    state.close();
  }
}

beforeAll(async () => {
  dir = mkdtempSync(join(TMP, "run-"));
  file = join(dir, "mailgator.toml");
  sender = await createMailbox({ name: "sender-notice-agent" });
  notices = await createMailbox({ name: "sender-notice-notices" });
  const adminPort = await freePort();
  writeFileSync(
    file,
    serveConfig(
      { dir, adminPort, approvals: { timeout: "1h", notifyAccount: "notices", notifySender: true } },
      `
${agentToml("bot", agentToken, "mail")}
${oauthAccountToml("mail", sender.user)}
${oauthAccountToml("notices", notices.user)}
[[rules]]
name = "outside needs a manager"
action = "ask"
operations = ["send"]
ask_groups = ["managers"]
`,
    ),
  );
  // `check` takes it as it is: approvals set up, the notices sent as an account no agent uses.
  const checked = runCli(["check", "-c", file]);
  expect(checked.exitCode).toBe(0);
  await login("mail", sender.user);
  await login("notices", notices.user);
  served = serveChild(file);
  smtpPort = await served.port("SMTP");
});

afterAll(async () => {
  if (served !== undefined && served.proc.exitCode === null) {
    await stopServed(served);
  }
});

/** The agent sends one message to an outside address with nodemailer through serve: the ask rule holds it. */
async function hold(): Promise<{ id: string; token: string }> {
  const token = uniqueToken("held");
  const transport = nodemailer.createTransport({
    host: "127.0.0.1",
    port: smtpPort,
    secure: false,
    ignoreTLS: true,
    auth: { user: "bot", pass: agentToken },
  });
  try {
    const info = await transport.sendMail({
      from: sender.address,
      to: `out-${token}@outside.example`,
      subject: `subject ${token}`,
      text: `Hello ${token}\n`,
    });
    return { id: heldId(info.response), token };
  } finally {
    transport.close();
  }
}

/** Postfix's log lines of a successful SASL login of `user` by an OAuth2 mechanism. */
function oauthLogins(user: string): string[] {
  const log = upstreams().logs["postfix"];
  return (log !== undefined && existsSync(log) ? readFileSync(log, "utf8") : "")
    .split("\n")
    .filter((l) => l.includes(`sasl_username=${user}`) && /sasl_method=(XOAUTH2|OAUTHBEARER)\b/.test(l));
}

/** The audit rows of the sender's notice about `id`: decision and protocol. */
function senderNotified(id: string): { decision: string; protocol: string }[] {
  const db = new Database(join(dir, "audit.db"), { readonly: true });
  try {
    return db
      .query(
        "SELECT decision, protocol FROM audit WHERE target = ? AND command = 'APPROVAL SENDER NOTIFIED' ORDER BY id",
      )
      .all(id) as { decision: string; protocol: string }[];
  } finally {
    db.close();
  }
}

describe("approvals approve|deny as its own process: the sender's notice, sent as an OAuth2 account", () => {
  for (const verb of ["approve", "deny"] as const) {
    test(`${verb}: the notice arrives, logged in with a fresh token the command asked for`, async () => {
      const up = upstreams();
      const { id, token } = await hold();
      // serve tells the approver, as account "notices" with its cached token: done before that token stops working.
      const [approverNotice] = await waitFor("approver notices", () => noticesIn(up.sink, id), 1);
      expect(approverNotice!.recipient).toBe("boss@corp.test");
      // The cached token stops working: only a token manager in the command can log "notices" in now.
      expect((await control("expire", { user: notices.user })).status).toBe(200);
      const refreshesBefore = (await refreshCounters(notices.user)).refreshes;
      const loginsBefore = oauthLogins(notices.user).length;

      const r = runCli(["approvals", verb, id, "-c", file]);
      // A notice that could not be sent is an error log line ("... not sent: ..."), the command's exit code unchanged.
      expect(r.stderr).not.toMatch(/not sent/);
      expect(r.stdout).toMatch(
        verb === "approve"
          ? new RegExp(`^${id}: sent: upstream replied 250 `)
          : new RegExp(`^${id}: denied; the message is discarded`),
      );
      expect(r.exitCode).toBe(0);

      // The agent's mailbox gets the result, from the notices account.
      const [notice] = await waitFor("sender notices", () => noticesIn(sender.maildir, id), 1);
      const field = (name: string) => notice!.fields.find((f) => f.name === name)?.value;
      expect(field("delivered-to")).toBe(sender.address);
      expect(field("from")).toBe(`Mailgator <${notices.address}>`);
      expect(notice!.body).toContain(verb === "approve" ? "was approved and sent" : "was denied: it was not sent");
      expect(notice!.body).toContain(`subject ${token}`);
      expect(senderNotified(id)).toEqual([{ decision: "allow", protocol: "cli" }]);
      // The command asked the authorization server for one fresh token, and Postfix logged it in by OAuth2.
      expect((await refreshCounters(notices.user)).refreshes).toBe(refreshesBefore + 1);
      await waitFor("OAuth2 logins", () => oauthLogins(notices.user).slice(loginsBefore), 1);

      // The approved message went out once; a denied one never does.
      const expected = verb === "approve" ? 1 : 0;
      if (expected === 1) await waitFor("copies", () => sinkMessages(token), 1);
      await Bun.sleep(SETTLE_MS);
      expect(sinkMessages(token).length).toBe(expected);
    });
  }
});
