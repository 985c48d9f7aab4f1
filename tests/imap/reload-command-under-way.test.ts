/**
 * A reload while a command of an IMAP session runs (docs/operations.md "Reload", docs/filtering.md "Reload"), against
 * Dovecot over a raw socket. A session that the reload ends for its agent, token or upstream gets the reply of its
 * command first, then `* BYE`; but when the new rules also show its selected folder otherwise (the usual case of an
 * agent removed with the rules that named it), the session ends at once: the rest of a long FETCH is not sent.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { generateToken, hashToken } from "../../src/vault/token.ts";
import { connectImap, createMailbox, type TestMailbox } from "../fixtures/index.ts";
import { RawImap, startTestProxy, statusOf, type TestProxy } from "./helpers.ts";

/** Messages of about 100 kB each: far more than the sockets between proxy and agent hold. */
const COUNT = 120;
const BODY_LINES = 1300;

const botToken = generateToken();
const otherToken = generateToken();
let mailbox: TestMailbox;
let proxy: TestProxy;

/** Vault mode: `bot` (unless left out) and `other`, both on the test mailbox; `bot` reads INBOX when `botRule`. */
function vault(o: { bot: boolean; botRule: boolean; botToken?: string }): { rules: string; extra: string } {
  const agents = [...(o.bot ? [["bot", hashToken(o.botToken ?? botToken)]] : []), ["other", hashToken(otherToken)]];
  const botRule = `[[rules]]
name = "bot reads INBOX"
agents = ["bot"]
folders = ["INBOX"]
action = "allow"
operations = ["read"]
`;
  const rules = `
${o.botRule ? botRule : ""}
[[rules]]
name = "Rest"
action = "deny"
`;
  const extra = `${agents
    .map(([name, hash]) => `[[agents]]\nname = "${name}"\ntoken_hash = "${hash}"\naccount = "main"\n`)
    .join("\n")}
[accounts.main]
username = "${mailbox.user}"
password = "${mailbox.password}"
`;
  return { rules, extra };
}

beforeAll(async () => {
  mailbox = await createMailbox({ name: "reload-under-way" });
  const direct = await connectImap(mailbox);
  const line = `${"x".repeat(76)}\r\n`;
  for (let i = 1; i <= COUNT; i++)
    await direct.append(
      "INBOX",
      `From: ann@example.test\r\nTo: bot@example.test\r\nSubject: note ${i}\r\nMessage-ID: <note-${i}@example.test>` +
        `\r\n\r\n${line.repeat(BODY_LINES)}`,
    );
  await direct.logout();
  proxy = await startTestProxy(vault({ bot: true, botRule: true }));
});

afterAll(async () => {
  await proxy?.close();
});

/**
 * `bot` selects INBOX and asks for every message while it reads nothing (its socket paused, so the proxy's output
 * waits); then `change` is reloaded as serve reloads it, and the agent reads what it is sent until the proxy closes.
 */
async function fetchThroughReload(change: { rules: string; extra: string }): Promise<{ ended: number; text: string }> {
  proxy.reload(vault({ bot: true, botRule: true }));
  const raw = await RawImap.open(proxy.port);
  try {
    expect(statusOf(await raw.command("L", `LOGIN bot ${botToken}`), "L")).toStartWith("L OK");
    expect(await raw.command("s", "EXAMINE INBOX")).toContain(`* ${COUNT} EXISTS\r\n`);
    raw.socket.pause();
    raw.write("f FETCH 1:* (BODY.PEEK[])\r\n");
    // The proxy has sent what the sockets hold and waits for the agent to read.
    await Bun.sleep(500);
    const ended = proxy.reload(change);
    raw.socket.resume();
    const text = await raw.readUntil(() => false, 30_000, "the proxy did not close the session");
    return { ended, text };
  } finally {
    raw.close();
  }
}

for (const [what, change] of [
  ["the agent removed with the rule that let it read INBOX", () => vault({ bot: false, botRule: false })],
  [
    "its token changed and INBOX no longer readable",
    () => vault({ bot: true, botRule: false, botToken: "x".repeat(43) }),
  ],
] as const) {
  test(`${what}: a FETCH under way ends at once, not after the rest of the folder`, async () => {
    const { ended, text } = await fetchThroughReload(change());
    expect(ended).toBe(1);
    expect(text).toEndWith("* BYE Configuration changed; this session ends, log in again\r\n");
    // Only what had left the proxy before the reload: never the whole folder, nor the FETCH's OK.
    expect(text).not.toContain("f OK");
    expect((text.match(/\* \d+ FETCH /g) ?? []).length).toBeLessThan(COUNT);
  });
}

test("its token changed, INBOX still readable: the FETCH gets its whole reply, then * BYE", async () => {
  // The same change of token with the rules as they were: the command under way is answered first.
  const { ended, text } = await fetchThroughReload(vault({ bot: true, botRule: true, botToken: "y".repeat(43) }));
  expect(ended).toBe(1);
  expect((text.match(/\* \d+ FETCH /g) ?? []).length).toBe(COUNT);
  expect(text).toEndWith("f OK Fetch completed\r\n* BYE Configuration changed; this session ends, log in again\r\n");
});
