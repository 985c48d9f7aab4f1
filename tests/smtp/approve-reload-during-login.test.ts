/**
 * A reload while an approval logs in upstream (docs/approvals.md "Deciding", docs/operations.md "Reload"), against
 * Postfix: the held message's agent, token and identities are checked against the config in force when the message
 * is claimed, not only before the login. A reload that removes the agent, rotates its token, takes its identity,
 * changes the upstream or puts in rules that deny the send while the approval connects sends nothing; the message
 * stays held. Rules that still hold it let it go: the approval covers a hold.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { type ApprovalContext, approve } from "../../src/approvals/service.ts";
import type { Config, RuleConfig } from "../../src/config/index.ts";
import { TcpRelay } from "../fixtures/tcp-relay.ts";
import {
  askManagersRules,
  dataPayload,
  marker,
  message,
  sinkCopies,
  startTestProxy,
  type TestProxy,
  upstreams,
  vaultClient,
  vaultConfig,
} from "./helpers.ts";

const RULES = askManagersRules("http://127.0.0.1:1");
const TOKEN = "mg_approve-during-reload-token-0123456789";

let proxy: TestProxy;
/** What the relay does when an approval connects upstream through it: the reload under test. */
let onConnect: () => void = () => {};
let relay: TcpRelay;

beforeAll(async () => {
  proxy = await startTestProxy({ rules: vaultConfig(RULES, TOKEN), approvals: true });
  const up = upstreams();
  relay = await TcpRelay.start({ host: up.host, port: up.ports.smtp }, () => {
    onConnect();
    return {};
  });
});

afterAll(async () => {
  await relay?.close();
  await proxy?.close();
});

/** Holds one message of the agent `bot`; returns its id and the text that marks it in the sink. */
async function held(): Promise<{ id: string; m: string }> {
  const m = marker();
  const user = upstreams().users[0]!;
  const c = await vaultClient(proxy.port, TOKEN);
  expect((await c.command(`MAIL FROM:<${user.user}>`)).code).toBe(250);
  expect((await c.command(`RCPT TO:<reload-${m}@outside.example>`)).code).toBe(250);
  expect((await c.command("DATA")).code).toBe(354);
  c.write(dataPayload(message({ From: user.user, Subject: m }, `Hello ${m}\n`)));
  const text = (await c.reply()).lines.join(" ");
  await c.command("QUIT");
  const id = /Held for approval as ([0-9a-f]{32})$/.exec(text)?.[1];
  if (id === undefined) throw new Error(`not held: ${text}`);
  return { id, m };
}

const user = () => upstreams().users[0]!;

/** Puts `rule` first in the rules of `c`. */
const ruleFirst =
  (rule: RuleConfig) =>
  (c: Config): Config => ({ ...c, rules: [rule, ...c.rules] });
const DENY_OUTSIDE: RuleConfig = {
  name: "no more mail to outside.example",
  action: "deny",
  operations: ["mail:send"],
  to: ["*@outside.example"],
  // The agent as the policy sees it in vault mode (its name): a rule for it applies to its held messages too.
  agents: ["bot"],
};

for (const [what, reloaded, reason] of [
  ["the agent removed", (c: Config): Config => ({ ...c, agents: [] }), "the agent bot is no longer configured"],
  [
    "its token rotated",
    (c: Config): Config => ({ ...c, agents: c.agents.map((a) => ({ ...a, tokenHash: `sha256:${"0".repeat(64)}` })) }),
    "the agent bot's token changed after the message was held",
  ],
  [
    "the sender no longer an identity (the account's username changed)",
    (c: Config): Config => ({
      ...c,
      accounts: { main: { ...c.accounts["main"]!, username: "someone-else@mailgator.test" } as never },
    }),
    `the sender ${user().user} is no longer one of this account's identities`,
  ],
  [
    "the upstream changed (its certificate no longer checked)",
    (c: Config): Config => ({ ...c, smtp: { ...c.smtp!, upstreamTlsSkipVerify: true } }),
    "a reload changed the upstream server or the account's login while the approval logged in",
  ],
  [
    "rules that deny its recipient",
    ruleFirst(DENY_OUTSIDE),
    (m: string) =>
      `the rules now deny this send: not allowed for <reload-${m}@outside.example>: ` +
      'mail:send matched rule 1 "no more mail to outside.example" (to "*@outside.example", agent "bot")',
  ],
] as const) {
  test(`${what} while the approval logs in upstream: nothing sent, still held`, async () => {
    const { id, m } = await held();
    const ctx = reloadingAtLogin(reloaded);
    const why = typeof reason === "string" ? reason : reason(m);
    try {
      expect(await approve(ctx, id, "test")).toEqual({ outcome: "not-sent", reason: why });
    } finally {
      onConnect = () => {};
    }
    expect(proxy.approvals!.row(id)!.state).toBe("held");
    await Bun.sleep(1000);
    expect(sinkCopies(`Hello ${m}`)).toHaveLength(0);
    const rows = (await proxy.rows()).filter((r) => r.command === "APPROVE" && r.target === id);
    expect(rows.map((r) => [r.decision, r.reason])).toEqual([
      ["error", `approved by test; not sent, still held: ${why}`],
    ]);
  });
}

/** An approval context whose config is `reloaded(config)` from the moment the approval connects upstream. */
function reloadingAtLogin(reloaded: (c: Config) => Config): ApprovalContext {
  // The approval sends through the relay, which puts the reload in force as the approval connects.
  const before: Config = {
    ...proxy.config,
    smtp: { ...proxy.config.smtp!, upstreamAddr: { host: "127.0.0.1", port: relay.port } },
  };
  let config = before;
  onConnect = () => {
    config = reloaded(before);
  };
  return {
    get config() {
      return config;
    },
    store: proxy.approvals!,
    audit: proxy.audit,
    protocol: "cli",
  };
}

test("rules that still hold it, put in while the approval logs in upstream: it is sent", async () => {
  const { id, m } = await held();
  const ctx = reloadingAtLogin(ruleFirst({ ...DENY_OUTSIDE, to: ["*@elsewhere.example"] }));
  try {
    expect((await approve(ctx, id, "test")).outcome).toBe("sent");
  } finally {
    onConnect = () => {};
  }
  expect(proxy.approvals!.row(id)!.state).toBe("sent");
  for (let n = 0; n < 100 && sinkCopies(`Hello ${m}`).length === 0; n++) await Bun.sleep(100);
  expect(sinkCopies(`Hello ${m}`)).toHaveLength(1);
});
