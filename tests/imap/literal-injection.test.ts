/**
 * Literals upstream (docs/protocol.md §4, "Upstream literals"): the octets of a literal are the agent's data, and a
 * server that refuses a command before it reads them skips to the next line and takes them as commands of the
 * proxy's own session. Dovecot offers LITERAL+; the proxy still sends every literal synchronizing, so a command
 * Dovecot refuses never sends them (the SEARCH case, past Dovecot's line limit; upstream-literals.test.ts shows the
 * same with a stand-in server). The APPEND cases carry `\Recent`, which Dovecot refuses before the literal; the
 * proxy now refuses it itself (docs/protocol.md §1, STORE), so nothing of those commands goes upstream at all. Each
 * case puts upstream commands inside a literal and checks Dovecot directly afterwards: no folder was created or
 * renamed, and the agent's session goes on.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { connectImap, createMailbox, type TestMailbox } from "../fixtures/index.ts";
import { RawImap, startTestProxy, statusOf, type TestProxy, upstreamState } from "./helpers.ts";

const RULES = `
[[rules]]
name = "Secret"
folders = ["Secret", "Secret/**"]
action = "deny"

[[rules]]
name = "Rest"
action = "allow"
`;

let mailbox: TestMailbox;
let proxy: TestProxy;

beforeAll(async () => {
  mailbox = await createMailbox({ name: "literal-injection" });
  const direct = await connectImap(mailbox);
  for (const folder of ["Secret", "Own"]) await direct.mailboxCreate(folder);
  await direct.logout();
  proxy = await startTestProxy({ rules: RULES });
});

afterAll(async () => {
  await proxy?.close();
});

/** `payload` padded with spaces to `size` octets: a literal whose first line is an upstream command. */
function literal(payload: string, size = payload.length): string {
  return payload + " ".repeat(Math.max(0, size - payload.length));
}

async function foldersNow(): Promise<string[]> {
  return (await upstreamState(mailbox)).folders.map((f) => f.path).sort();
}

test("an APPEND with \\Recent, which Dovecot refuses before its literal, sends nothing upstream", async () => {
  const before = await foldersNow();
  const raw = await RawImap.login(proxy.port, mailbox);
  const data = literal("X1 RENAME Secret Own/stolen\r\nX2 CREATE Injected-append\r\n", 80);
  const reply = await raw.command("c", `APPEND Own (\\Recent) {${data.length}+}\r\n${data}`);
  expect(statusOf(reply, "c")).toMatch(/^c (BAD|NO) /);
  expect(reply).not.toContain("* BYE");
  // The session, and the proxy's upstream session under it, go on.
  expect(statusOf(await raw.command("d", "NOOP"), "d")).toStartWith("d OK");
  expect(statusOf(await raw.command("e", "SELECT Own"), "e")).toStartWith("e OK");
  raw.close();
  expect(await foldersNow()).toEqual(before);
});

test("nor does a MULTIAPPEND whose second message has \\Recent", async () => {
  const before = await foldersNow();
  const raw = await RawImap.login(proxy.port, mailbox);
  const first = "Subject: one\r\n\r\nfirst\r\n";
  const second = literal("X3 CREATE Injected-multi\r\n", 60);
  const reply = await raw.command(
    "m",
    `APPEND Own {${first.length}+}\r\n${first} (\\Recent) {${second.length}+}\r\n${second}`,
  );
  expect(statusOf(reply, "m")).toMatch(/^m (BAD|NO) /);
  expect(statusOf(await raw.command("n", "NOOP"), "n")).toStartWith("n OK");
  raw.close();
  expect(await foldersNow()).toEqual(before);
});

test("a SEARCH whose upstream line passes Dovecot's line limit sends none of its literal", async () => {
  const before = await foldersNow();
  const raw = await RawImap.login(proxy.port, mailbox);
  expect(statusOf(await raw.command("s", "SELECT INBOX"), "s")).toStartWith("s OK");
  // Each agent line stays under the proxy's own line limit; strings of up to 1,024 octets go upstream quoted, in
  // one line, so the upstream line passes Dovecot's 64 KiB before the last literal, the trap.
  const quoted = (n: number) =>
    Array(n)
      .fill(`TEXT "${"a".repeat(1000)}"`)
      .join(" ");
  const inner = "b".repeat(1000);
  const trap = literal("X9 CREATE Injected-search\r\n", 1200);
  const reply = await raw.command(
    "x",
    `UID SEARCH ${quoted(60)} TEXT {${inner.length}+}\r\n${inner} ${quoted(10)} TEXT {${trap.length}+}\r\n${trap}`,
  );
  expect(statusOf(reply, "x")).toMatch(/^x (OK|NO|BAD) /);
  expect(statusOf(await raw.command("y", "NOOP"), "y")).toStartWith("y OK");
  raw.close();
  expect(await foldersNow()).toEqual(before);
});
