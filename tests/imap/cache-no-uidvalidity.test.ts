/**
 * A filtered folder opened without a UIDVALIDITY (upstream's SELECT or EXAMINE sent no `[UIDVALIDITY n]`, which RFC
 * 3501 §6.3.1 requires) is neither read from nor stored in the classification cache (docs/filtering.md "The cache"):
 * nothing says its UIDs are those of the folder a row was stored for. Before, such a folder was cached under
 * UIDVALIDITY 0 and matched the next time as well: a folder deleted and created again under the same name numbers its
 * messages from 1 again, and the cached visible UID 1 showed the new folder's hidden message. Against Dovecot, through
 * a relay that drops the `* OK [UIDVALIDITY n]` line of its answers (tests/fixtures/tcp-relay.ts).
 */

import { afterAll, beforeAll, expect, test } from "bun:test";
import { connectImap, createMailbox, type TestMailbox, upstreams } from "../fixtures/index.ts";
import { TcpRelay } from "../fixtures/tcp-relay.ts";
import { fromMessage, RawImap, startTestProxy, type TestProxy } from "./helpers.ts";

/** Box shows shop@ messages only. */
const RULES = `
[[rules]]
name = "box: shop only"
folders = ["Box"]
from = "shop@*"
action = "allow"
operations = ["read"]

[[rules]]
name = "nothing else"
action = "deny"
`;

const VALIDITY = /\* OK \[UIDVALIDITY \d+\][^\r\n]*\r\n/g;

let relay: TcpRelay;
let proxy: TestProxy;
let mailbox: TestMailbox;

beforeAll(async () => {
  mailbox = await createMailbox({ name: "cache-no-uidvalidity" });
  const up = upstreams();
  relay = await TcpRelay.start({ host: up.host, port: up.ports.imap }, () => ({
    fromTarget: (chunk, link) => {
      link.client.write(Buffer.from(chunk.toString("latin1").replace(VALIDITY, ""), "latin1"));
    },
  }));
  proxy = await startTestProxy({ rules: RULES, upstreamTls: "none", upstreamAddr: `127.0.0.1:${relay.port}` });
});

afterAll(async () => {
  await proxy?.close();
  await relay?.close();
});

/** EXAMINE Box through the proxy, then the subjects of every message it shows. */
async function shown(): Promise<{ examine: string; fetch: string }> {
  const raw = await RawImap.login(proxy.port, mailbox);
  try {
    const examine = await raw.command("e", "EXAMINE Box");
    const fetch = await raw.command("f", "UID FETCH 1:* (BODY.PEEK[HEADER.FIELDS (SUBJECT)])");
    return { examine, fetch };
  } finally {
    raw.close();
  }
}

test("no UIDVALIDITY, no cache: a re-created folder's hidden message UID 1 stays hidden", async () => {
  const human = await connectImap(mailbox);
  try {
    await human.mailboxCreate("Box");
    await human.append("Box", fromMessage("shop@s.test", "receipt"));
    const first = await shown();
    expect(first.examine).not.toContain("UIDVALIDITY");
    expect(first.examine).toContain("* 1 EXISTS");
    expect(first.fetch).toContain("Subject: receipt");
    // The same name, a new folder: its first message is UID 1 again, and it is not the agent's to read.
    await human.mailboxDelete("Box");
    await human.mailboxCreate("Box");
    await human.append("Box", fromMessage("bank@corp.test", "hidden-statement"));
  } finally {
    await human.logout();
  }
  const second = await shown();
  expect(second.examine).toContain("* 0 EXISTS");
  expect(second.fetch).not.toContain("hidden-statement");
  expect(second.fetch).toEndWith("f OK Fetch completed\r\n");
});
