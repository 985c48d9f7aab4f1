/**
 * A command refused at its literal (a literal before login, literal8 outside APPEND) is a refused command
 * like a line that does not parse: MAX_BAD_COMMANDS of them end the session with `* BYE` (docs/reliability.md
 * "Malformed commands": all of them count before login; after login those within BAD_COMMAND_WINDOW_MS).
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { MAX_BAD_COMMANDS } from "../../src/imap/limits.ts";
import { createMailbox, type TestMailbox } from "../fixtures/index.ts";
import { RawImap, startTestProxy, type TestProxy } from "./helpers.ts";

let proxy: TestProxy;
let mailbox: TestMailbox;

beforeAll(async () => {
  proxy = await startTestProxy();
  mailbox = await createMailbox({ seed: { folders: { INBOX: 1 }, seed: 2 } });
});

afterAll(async () => {
  await proxy?.close();
});

const commands = (line: string): string =>
  Array.from({ length: MAX_BAD_COMMANDS + 5 }, (_, i) => `t${i} ${line}\r\nx\r\n`).join("");

test("before login: refused {n+} literals count as bad commands and end the session", async () => {
  const raw = await RawImap.open(proxy.port);
  raw.write(commands("NOOP {1+}"));
  const out = await raw.readUntil((b) => b.includes("* BYE"), 5000).catch((e: Error) => e.message);
  expect(out).toContain("* BYE Too many invalid commands");
  expect(out).not.toContain(`t${MAX_BAD_COMMANDS} BAD`);
  raw.close();
});

test("after login: refused literal8 outside APPEND counts as bad commands and ends the session", async () => {
  const raw = await RawImap.login(proxy.port, mailbox);
  raw.take();
  raw.write(commands("SEARCH SUBJECT ~{1+}"));
  const out = await raw.readUntil((b) => b.includes("* BYE"), 5000).catch((e: Error) => e.message);
  expect(out).toContain("* BYE Too many invalid commands");
  raw.close();
});
