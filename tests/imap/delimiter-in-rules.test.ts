/**
 * Rules separate folder levels with `/` whatever the server's hierarchy delimiter (docs/config.md "Globs"). On a
 * server whose delimiter is `.` (Dovecot's Maildir++ without a namespace separator, Courier), the folder
 * `INBOX.Private` is `INBOX/Private` to the rules, so a deny rule on `INBOX.Private` never matched, and a rule after
 * it allowed what the owner meant to stop. Such a rule (deny or ask, with a folder glob holding the delimiter) now
 * refuses the login, with an `error` row naming the rule, and a reload that brings one in ends the sessions it would
 * not fit. An allow rule holding it gives nothing and is left be.
 *
 * The test Dovecot's delimiter is `/`; a relay in front of it answers the proxy's `LIST "" ""` at login with `.`, as
 * a server set up that way does (tests/fixtures/tcp-relay.ts). Nothing else the relay passes is changed.
 */

import { afterAll, beforeAll, expect, test } from "bun:test";
import { createMailbox, type TestMailbox, upstreams } from "../fixtures/index.ts";
import { TcpRelay } from "../fixtures/tcp-relay.ts";
import { auditCursor, RawImap, startTestProxy, statusOf, type TestProxy } from "./helpers.ts";

const DENY_DOTTED = `
[[rules]]
name = "private stays private"
folders = ["INBOX.Private"]
action = "deny"

[[rules]]
name = "the rest"
action = "allow"
`;

const DENY_SLASHED = DENY_DOTTED.replace("INBOX.Private", "INBOX/Private");

const ALLOW_DOTTED = `
[[rules]]
name = "reports"
folders = ["Reports.2026"]
action = "allow"

[[rules]]
name = "the rest"
action = "allow"
`;

const REFUSED = "a NO [UNAVAILABLE] The proxy's rules do not fit this server's folder names; see its log";

let relay: TcpRelay;
let proxy: TestProxy;
let mailbox: TestMailbox;
let rows: ReturnType<typeof auditCursor>;
/**
 * When set, the upstream's answer with the delimiter waits for `held.until` (a login held at its last upstream step),
 * and `held.reached` is called as it arrives.
 */
let held: { until: Promise<void>; reached: () => void } | null = null;
const upstream = (): { upstreamTls: "none"; upstreamAddr: string } => ({
  upstreamTls: "none",
  upstreamAddr: `127.0.0.1:${relay.port}`,
});

beforeAll(async () => {
  mailbox = await createMailbox({ name: "delimiter-in-rules" });
  const up = upstreams();
  relay = await TcpRelay.start({ host: up.host, port: up.ports.imap }, () => {
    // Chunks go on in order; from the delimiter's answer on, after `held` (when a test sets it) has settled.
    let queue: Promise<void> = Promise.resolve();
    return {
      fromTarget: (chunk, link) => {
        const slashed = '* LIST (\\Noselect) "/" ""\r\n';
        const text = chunk.toString("latin1").replace(slashed, '* LIST (\\Noselect) "." ""\r\n');
        const wait = text.includes('"." ""') && held !== null ? held : null;
        wait?.reached();
        queue = queue.then(async () => {
          if (wait !== null) await wait.until;
          link.client.write(Buffer.from(text, "latin1"));
        });
      },
    };
  });
  proxy = await startTestProxy({ rules: DENY_DOTTED, ...upstream() });
  rows = auditCursor(proxy);
});

afterAll(async () => {
  await proxy?.close();
  await relay?.close();
});

async function login(): Promise<{ raw: RawImap; status: string }> {
  const raw = await RawImap.open(proxy.port);
  const status = statusOf(await raw.command("a", `LOGIN "${mailbox.user}" "${mailbox.password}"`), "a");
  return { raw, status };
}

test("a deny rule on INBOX.Private where the delimiter is '.': the login refused, its row names the rule", async () => {
  proxy.reload({ rules: DENY_DOTTED, ...upstream() });
  await rows();
  const { raw, status } = await login();
  raw.close();
  expect(status).toBe(REFUSED);
  const own = (await rows()).filter((r) => r.command === "LOGIN");
  expect(own.map((r) => [r.decision, r.rule, r.ruleIndex])).toEqual([["error", "private stays private", 0]]);
  expect(own[0]!.reason).toBe(
    'login refused: rule 1 "private stays private" names the folder glob "INBOX.Private", which holds the ' +
      `server's hierarchy delimiter ".": rules separate levels with "/" (docs/config.md "Globs"), so it never ` +
      'matches; write it with "/"',
  );
});

test("the same rule written with '/', and an allow rule holding '.', log in", async () => {
  for (const rules of [DENY_SLASHED, ALLOW_DOTTED]) {
    proxy.reload({ rules, ...upstream() });
    const { raw, status } = await login();
    try {
      expect(status).toStartWith("a OK");
    } finally {
      raw.close();
    }
  }
});

test("a reload that brings such a rule in ends a session logged in before it", async () => {
  proxy.reload({ rules: DENY_SLASHED, ...upstream() });
  const { raw, status } = await login();
  try {
    expect(status).toStartWith("a OK");
    proxy.reload({ rules: DENY_DOTTED, ...upstream() });
    const rest = await raw.readUntil(() => false);
    expect(rest).toContain("* BYE Configuration changed");
  } finally {
    raw.close();
  }
});

test("a reload that brings such a rule in while a login waits for the delimiter ends that session", async () => {
  // The login was checked against the rules before the reload, which had no such rule; the reload is judged when
  // the login ends, against the delimiter that login learnt.
  proxy.reload({ rules: DENY_SLASHED, ...upstream() });
  let release = (): void => {};
  let reached = (): void => {};
  const arrived = new Promise<void>((resolve) => {
    reached = resolve;
  });
  held = {
    until: new Promise<void>((resolve) => {
      release = resolve;
    }),
    reached,
  };
  const raw = await RawImap.open(proxy.port);
  try {
    raw.write(`a LOGIN "${mailbox.user}" "${mailbox.password}"\r\n`);
    // The proxy's login is upstream (its LOGIN answered, the delimiter's answer held): the reload comes now.
    await arrived;
    proxy.reload({ rules: DENY_DOTTED, ...upstream() });
    release();
    const rest = await raw.readUntil(() => false);
    expect(rest).toContain("* BYE Configuration changed");
  } finally {
    held = null;
    raw.close();
  }
});
