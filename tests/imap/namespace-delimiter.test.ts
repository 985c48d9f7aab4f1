/**
 * NAMESPACE (RFC 2342) gives upstream's hierarchy delimiter as a quoted string (RFC 3501 §9: QUOTED-CHAR), so a
 * backslash or a double quote is written escaped. Before, it was written as it was (`"\"` for a backslash), a
 * string that does not end where it should, and the agent's client read the rest of the line wrongly. Against
 * Dovecot behind a LineRelay that gives its `LIST "" ""` answer another delimiter, as a server using it would.
 */

import { afterAll, beforeAll, expect, test } from "bun:test";
import { createMailbox, type TestMailbox } from "../fixtures/index.ts";
import { LineRelay } from "../fixtures/tcp-relay.ts";
import { ALLOW_ALL, dovecotImap, RawImap, startRelayedProxy, statusOf, type TestProxy } from "./helpers.ts";

let relay: LineRelay;
let proxy: TestProxy;
let mailbox: TestMailbox;

beforeAll(async () => {
  mailbox = await createMailbox({ name: "namespace-delimiter" });
  relay = await LineRelay.start(dovecotImap());
  proxy = await startRelayedProxy(relay, ALLOW_ALL);
});

afterAll(async () => {
  await proxy?.close();
  await relay?.close();
});

for (const [name, delimiter, written] of [
  ["a backslash", "\\", '"\\\\"'],
  ["a double quote", '"', '"\\""'],
  ["a dot", ".", '"."'],
] as const) {
  test(`${name} as the delimiter is written as a valid quoted string: ${written}`, async () => {
    // Dovecot's answer to the proxy's `LIST "" ""` at login, the one line that names the delimiter there.
    const quoted = delimiter === "\\" || delimiter === '"' ? `"\\${delimiter}"` : `"${delimiter}"`;
    const stop = relay.rewriteEvery(/^\* LIST \([^)]*\) "\/" ""\r\n$/, (line) => line.replace('"/"', quoted));
    try {
      const raw = await RawImap.login(proxy.port, mailbox);
      try {
        const reply = await raw.command("n", "NAMESPACE");
        expect(statusOf(reply, "n")).toStartWith("n OK");
        expect(reply).toStartWith(`* NAMESPACE (("" ${written})) NIL NIL\r\n`);
      } finally {
        raw.close();
      }
    } finally {
      stop();
    }
  });
}
