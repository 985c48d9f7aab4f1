/**
 * A reload while DELETE or RENAME asks upstream for the folders below the one it names (docs/operations.md
 * "Reload"): the folder and every folder below it must all be judged by one config. Here neither config allows the
 * command (the old one keeps `Work/Keep` read only, the new one keeps `Work` read only), so whichever config decides,
 * it is refused and Dovecot keeps every folder and message. Against Dovecot through a relay that holds the proxy's
 * `LIST "" "Work/*"` until the test has reloaded, as serve reloads after SIGHUP.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { generateToken, hashToken } from "../../src/vault/token.ts";
import { connectImap, createMailbox, type TestMailbox, upstreams } from "../fixtures/index.ts";
import { HoldingRelay } from "../fixtures/tcp-relay.ts";
import { rawMessage } from "./filtered-fixture.ts";
import { RawImap, startTestProxy, statusOf, type TestProxy, upstreamState } from "./helpers.ts";

/** `Work` (and `Done`, where RENAME would put it) the agent's; everything below `Work` and `Done` read only. */
const OLD = `
[[rules]]
name = "Below, read"
folders = ["Work/**", "Done/**"]
action = "allow"
operations = ["read"]

[[rules]]
name = "Work"
folders = ["Work", "Done"]
action = "allow"

[[rules]]
name = "Rest"
action = "deny"
`;

/** The other way round: everything below `Work` and `Done` the agent's, `Work` and `Done` themselves read only. */
const NEW = `
[[rules]]
name = "Below"
folders = ["Work/**", "Done/**"]
action = "allow"

[[rules]]
name = "Work, read"
folders = ["Work", "Done"]
action = "allow"
operations = ["read"]

[[rules]]
name = "Rest"
action = "deny"
`;

let relay: HoldingRelay;
let proxy: TestProxy;
let upstream: { upstreamTls: "none"; upstreamAddr: string };

beforeAll(async () => {
  const up = upstreams();
  relay = await HoldingRelay.start({ host: up.host, port: up.ports.imap });
  upstream = { upstreamTls: "none", upstreamAddr: `127.0.0.1:${relay.port}` };
  proxy = await startTestProxy({ rules: OLD, ...upstream });
});

afterAll(async () => {
  await proxy?.close();
  await relay?.close();
});

for (const command of ["DELETE Work", "RENAME Work Done"]) {
  test(`${command}: a reload while the folders below are listed does not let each config decide a part`, async () => {
    proxy.reload({ rules: OLD, ...upstream });
    const mailbox = await createMailbox({ name: "reload-subtree" });
    const direct = await connectImap(mailbox);
    await direct.mailboxCreate("Work");
    await direct.mailboxCreate("Work/Keep");
    await direct.append("Work", rawMessage("ann@example.test", "In Work", "work"));
    await direct.append("Work/Keep", rawMessage("bob@example.test", "In Keep", "keep"));
    await direct.logout();
    const before = await upstreamState(mailbox);

    const raw = await RawImap.login(proxy.port, mailbox);
    try {
      // Each config alone refuses it.
      expect(statusOf(await raw.command("o", command), "o")).toStartWith("o NO [NOPERM]");
      proxy.reload({ rules: NEW, ...upstream });
      expect(statusOf(await raw.command("n", command), "n")).toStartWith("n NO [NOPERM]");
      proxy.reload({ rules: OLD, ...upstream });

      const release = Promise.withResolvers<void>();
      const held = relay.hold(/LIST "" "?Work\/\*"?/, release.promise);
      raw.write(`c ${command}\r\n`);
      await held;
      proxy.reload({ rules: NEW, ...upstream });
      release.resolve();
      expect(statusOf(await raw.waitTagged("c"), "c")).toStartWith("c NO [NOPERM]");
    } finally {
      relay.clear();
      raw.close();
    }
    expect(await upstreamState(mailbox)).toEqual(before);
  });
}

/**
 * A reload that removes the agent while its DELETE or RENAME waits for that listing: the session ends after the
 * command's reply (docs/operations.md "Reload"), and the command's remaining decision is not made for an agent the
 * config no longer has, even by a rule that names no agents. Nothing reaches Dovecot.
 */
const AGENT_TOKEN = generateToken();

function vault(mailbox: TestMailbox, withBot: boolean): { rules: string; extra: string } {
  const bot = `[[agents]]\nname = "bot"\ntoken_hash = "${hashToken(AGENT_TOKEN)}"\naccount = "main"\n`;
  const other = `[[agents]]\nname = "other"\ntoken_hash = "${hashToken(generateToken())}"\naccount = "main"\n`;
  return {
    rules: `
[[rules]]
name = "Work, any agent"
folders = ["Work", "Work/**", "Done", "Done/**"]
action = "allow"

[[rules]]
name = "Rest"
action = "deny"
`,
    extra: `${withBot ? bot : ""}${other}
[accounts.main]
username = "${mailbox.user}"
password = "${mailbox.password}"
`,
  };
}

for (const command of ["DELETE Work", "RENAME Work Done"]) {
  test(`${command}: the agent removed while the folders below are listed gets NO, then * BYE`, async () => {
    const mailbox = await createMailbox({ name: "reload-agent-gone" });
    const direct = await connectImap(mailbox);
    await direct.mailboxCreate("Work");
    await direct.mailboxCreate("Work/Keep");
    await direct.append("Work", rawMessage("ann@example.test", "In Work", "work"));
    await direct.logout();
    const before = await upstreamState(mailbox);
    const vaultProxy = await startTestProxy({ ...vault(mailbox, true), ...upstream });
    const raw = await RawImap.open(vaultProxy.port);
    try {
      expect(statusOf(await raw.command("L", `LOGIN bot ${AGENT_TOKEN}`), "L")).toStartWith("L OK");
      const release = Promise.withResolvers<void>();
      const held = relay.hold(/LIST "" "?Work\/\*"?/, release.promise);
      raw.write(`c ${command}\r\n`);
      await held;
      expect(vaultProxy.reload({ ...vault(mailbox, false), ...upstream })).toBe(1);
      release.resolve();
      const text = await raw.readUntil(() => false, 10_000, "the proxy did not close the session");
      expect(text).toMatch(/^c NO .*\r\n\* BYE Configuration changed; this session ends, log in again\r\n$/m);
      expect(text).not.toContain("c OK");
      const row = (await vaultProxy.rows()).findLast((r) => r.command === command.split(" ")[0]);
      expect([row?.decision, row?.folder, row?.reason]).toEqual([
        "deny",
        "Work",
        "the configuration changed while the command ran and ends this session: the agent was removed",
      ]);
    } finally {
      relay.clear();
      raw.close();
      await vaultProxy.close();
    }
    expect(await upstreamState(mailbox)).toEqual(before);
  });
}
