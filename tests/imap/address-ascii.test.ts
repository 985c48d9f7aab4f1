/**
 * A from rule against addresses that only look like the one it names (docs/filtering.md "Deciding a message"),
 * through the proxy against the real Dovecot: an addr-spec with a character that is not ASCII is unknown, so a
 * folder shown only for kate@corp.test hides a message from `\u212Aate@corp.test` (KELVIN SIGN, which lower-cases
 * to `k`), from a decomposed or Cyrillic look-alike, while a display name may hold any character.
 */

import { afterAll, beforeAll, test } from "bun:test";
import { connectImap, createMailbox, type TestMailbox } from "../fixtures/index.ts";
import { expectInboxShows } from "./filtered-fixture.ts";
import { startTestProxy, type TestProxy } from "./helpers.ts";

const RULES = `
[[rules]]
name = "kate's mail"
action = "allow"
folders = ["INBOX"]
operations = ["read"]
from = "kate@corp.test"

[[rules]]
name = "nothing else"
action = "deny"
`;

let mailbox: TestMailbox;
let proxy: TestProxy;
const shown: number[] = [];
const hidden: number[] = [];

function message(from: string, id: string): Buffer {
  const header = `From: ${from}\r\nTo: <me@corp.test>\r\nSubject: hello\r\nMessage-ID: <${id}@ascii.test>\r\n`;
  return Buffer.from(`${header}Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n\r\nbody of ${id}\r\n`, "utf8");
}

beforeAll(async () => {
  mailbox = await createMailbox();
  const client = await connectImap(mailbox);
  const append = async (from: string, id: string) =>
    ((await client.append("INBOX", message(from, id), [])) as { uid: number }).uid;
  shown.push(await append("Kate <kate@corp.test>", "plain"));
  hidden.push(await append("Kate <\u212Aate@corp.test>", "kelvin"));
  hidden.push(await append("\u212AATE@CORP.TEST", "kelvin-upper"));
  hidden.push(await append("kate@corp\u0307.test", "combining"));
  hidden.push(await append("kate@c\u043Erp.test", "cyrillic"));
  shown.push(await append("Käte Ö <KATE@Corp.Test>", "display-name"));
  await client.logout();
  proxy = await startTestProxy({ rules: RULES });
});

afterAll(async () => {
  await proxy?.close();
});

test("only the messages from kate@corp.test itself are there; look-alike addr-specs are hidden", async () => {
  await expectInboxShows(proxy.port, mailbox, shown, hidden);
});
