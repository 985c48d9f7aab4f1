/**
 * Audit before data (docs/imap.md): a command's output reaches the agent only once its allow row is accepted.
 * Here the log refuses the row of one command at a time while still reporting itself healthy, as when another
 * session's commit fails while the command runs (the real full disk is tests/e2e/audit-full-disk.test.ts): the
 * agent gets the NO and not one untagged line of what the command had gathered.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { type AuditLog, AuditUnavailableError } from "../../src/audit/index.ts";
import { createMailbox, type TestMailbox } from "../fixtures/index.ts";
import { RawImap, startTestProxy, type TestProxy } from "./helpers.ts";

/** The command whose allow row the log refuses next (once), or null. */
let refuseRowOf: string | null = null;

/** The real log, except that the allow row of `refuseRowOf` throws as a failing log's record() does. */
function failingOnCue(log: AuditLog): AuditLog {
  return new Proxy(log, {
    get(target, key) {
      if (key === "record") {
        return (ev: Parameters<AuditLog["record"]>[0]) => {
          if (ev.decision === "allow" && ev.command === refuseRowOf) {
            refuseRowOf = null;
            throw new AuditUnavailableError("audit: cannot write (test)");
          }
          target.record(ev);
        };
      }
      const value = Reflect.get(target, key, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}

let proxy: TestProxy;
let mailbox: TestMailbox;
let agent: RawImap;

beforeAll(async () => {
  mailbox = await createMailbox({ seed: { folders: { INBOX: 4, Archive: 2 } } });
  proxy = await startTestProxy({ wrapAudit: failingOnCue });
  agent = await RawImap.open(proxy.port);
  expect(await agent.command("l", `LOGIN "${mailbox.user}" "${mailbox.password}"`)).toMatch(/^l OK /m);
  expect(await agent.command("s", "SELECT INBOX")).toContain("* 4 EXISTS");
});

afterAll(async () => {
  await agent?.command("z", "LOGOUT");
  await proxy?.close();
});

function onlyRefusal(tag: string): RegExp {
  return new RegExp(`^${tag} NO \\[UNAVAILABLE\\] [^\\r\\n]*\\r\\n$`);
}

for (const [command, line] of [
  ["SEARCH", "SEARCH ALL"],
  ["UID SEARCH", "UID SEARCH ALL"],
  ["FETCH", "FETCH 1:* (FLAGS)"],
  ["LIST", 'LIST "" "*"'],
  ["LSUB", 'LSUB "" "*"'],
  ["STATUS", "STATUS Archive (MESSAGES)"],
  ["UID SORT", "UID SORT (ARRIVAL) US-ASCII ALL"],
  ["THREAD", "THREAD REFERENCES US-ASCII ALL"],
] as const) {
  test(`${command} whose row is refused: NO and nothing else; the next one answers in full`, async () => {
    refuseRowOf = command;
    expect(await agent.command("r", line)).toMatch(onlyRefusal("r"));
    const again = await agent.command("a", line);
    expect(again).toMatch(/^\* /);
    expect(again).toMatch(/\r\na OK [^\r\n]*\r\n$/);
  });
}

test("SELECT whose row is refused: NO and nothing else, and no mailbox is selected", async () => {
  refuseRowOf = "SELECT";
  expect(await agent.command("r", "SELECT Archive")).toMatch(onlyRefusal("r"));
  expect(await agent.command("f", "FETCH 1 (FLAGS)")).toBe("f BAD No mailbox selected\r\n");
  const again = await agent.command("a", "SELECT Archive");
  expect(again).toContain("* 2 EXISTS");
  expect(again).toMatch(/\r\na OK \[READ-WRITE\] [^\r\n]*\r\n$/);
});
