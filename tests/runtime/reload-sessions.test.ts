/**
 * A session that cannot take a reloaded config (its `reloaded` throws: a bug) is ended, never left open under rules
 * it may not have taken, and the sessions after it still take theirs; the reload's outcome is a reload in part
 * (src/runtime/reload.ts `reloadSessions`, docs/operations.md "Reload"). In process with stand-in sessions, then
 * with real IMAP and SMTP sessions against Dovecot and Postfix, one of them made to throw.
 */

import { afterAll, afterEach, expect, test } from "bun:test";
import { ImapSession } from "../../src/imap/session.ts";
import {
  commitListener,
  type ReloadingSession,
  ReloadPartError,
  reloadSessions,
  SessionsNotReloaded,
} from "../../src/runtime/reload.ts";
import { SmtpSession } from "../../src/smtp/session.ts";
import { createMailbox } from "../fixtures/index.ts";
import { RawImap, startTestProxy as startImapProxy, statusOf } from "../imap/helpers.ts";
import { loggedIn, startTestProxy as startSmtpProxy } from "../smtp/helpers.ts";

const closing: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const close of closing) await close();
});

/** Puts the prototypes' `reloaded` back after each test that replaced it. */
const restore: (() => void)[] = [];
afterEach(() => {
  for (const r of restore.splice(0)) r();
});

class StandIn implements ReloadingSession {
  ended: string | null = null;
  asked = 0;
  constructor(private readonly outcome: boolean | Error) {}
  reloaded(): boolean {
    this.asked++;
    if (this.outcome instanceof Error) throw this.outcome;
    return this.outcome;
  }
  endUnreloaded(why: string): void {
    this.ended = why;
  }
}

test("reloadSessions: a session that throws is ended, the others are still asked, and the count says so", () => {
  const sessions = [new StandIn(false), new StandIn(new Error("bug one")), new StandIn(true), new StandIn(false)];
  let thrown: unknown = null;
  try {
    reloadSessions(new Set(sessions));
  } catch (error) {
    thrown = error;
  }
  expect(sessions.map((s) => s.asked)).toEqual([1, 1, 1, 1]);
  expect(sessions.map((s) => s.ended)).toEqual([null, "bug one", null, null]);
  expect(thrown).toBeInstanceOf(SessionsNotReloaded);
  // The one the new rules ended and the one that threw.
  expect((thrown as SessionsNotReloaded).sessionsEnded).toBe(2);
  expect((thrown as Error).message).toBe("1 session(s) could not take the new config (bug one) and were ended");
  // Nothing throws: the count of the sessions the new rules ended.
  expect(reloadSessions([new StandIn(true), new StandIn(false), new StandIn(true)])).toBe(2);
});

test("commitListener: a TLS identity that cannot be set does not keep the sessions from taking the new config", () => {
  const sessions = [new StandIn(true), new StandIn(false)];
  const listener = {
    setIdentity() {
      throw new Error("no such identity");
    },
  };
  const identity = { cert: "", key: "" } as unknown as Parameters<typeof commitListener>[1];
  expect(() => commitListener(listener, identity, sessions)).toThrow(
    "the new TLS certificate could not be put in force (no such identity)",
  );
  expect(sessions.map((s) => s.asked)).toEqual([1, 1]);
  expect(commitListener(listener, null, [new StandIn(true)])).toBe(1);
});

/** Makes `reloaded` of the class throw for the first session asked, and only for it. */
function failFirst(proto: { reloaded(): boolean }): void {
  const original = proto.reloaded;
  let first = true;
  proto.reloaded = function (this: unknown) {
    if (first) {
      first = false;
      throw new Error("a bug in reloaded");
    }
    return original.call(this);
  };
  restore.push(() => {
    proto.reloaded = original;
  });
}

test("IMAP: the session whose reload throws gets BYE and is closed; the next one takes the new rules", async () => {
  const proxy = await startImapProxy();
  closing.push(() => proxy.close());
  const mailbox = await createMailbox({ name: "reload-throws" });
  const first = await RawImap.login(proxy.port, mailbox);
  const second = await RawImap.login(proxy.port, mailbox);
  closing.push(async () => {
    first.close();
    second.close();
  });
  failFirst(ImapSession.prototype);
  let thrown: unknown = null;
  try {
    proxy.reload({});
  } catch (error) {
    thrown = error;
  }
  expect(thrown).toBeInstanceOf(SessionsNotReloaded);
  expect((thrown as SessionsNotReloaded).sessionsEnded).toBe(1);
  const ended = await first.readUntil(() => false, 10_000, "the proxy did not close the session");
  expect(ended).toBe("* BYE Configuration changed; this session ends, log in again\r\n");
  expect(first.closed).toBe(true);
  expect(statusOf(await second.command("n", "NOOP"), "n")).toBe("n OK NOOP completed");
  const rows = await proxy.rows();
  expect(rows.filter((r) => r.decision === "allow" && r.reason === "logged in")).toHaveLength(2);
});

test("SMTP: the session whose reload throws gets 421 and is closed; the next one takes the new rules", async () => {
  const proxy = await startSmtpProxy({ rules: '[[rules]]\nname = "all"\naction = "allow"\n' });
  closing.push(() => proxy.close());
  const first = await loggedIn(proxy.port);
  const second = await loggedIn(proxy.port);
  closing.push(async () => {
    first.close();
    second.close();
  });
  failFirst(SmtpSession.prototype);
  let thrown: unknown = null;
  try {
    proxy.proxy.prepareReload(proxy.config).commit();
  } catch (error) {
    thrown = error;
  }
  expect(thrown).toBeInstanceOf(SessionsNotReloaded);
  expect((thrown as SessionsNotReloaded).sessionsEnded).toBe(1);
  const ended = await first.reply();
  expect([ended.code, ended.lines.join(" ")]).toEqual([
    421,
    "4.3.2 Configuration changed; this session ends, log in again",
  ]);
  await first.waitClosed();
  expect((await second.command("NOOP")).code).toBe(250);
});

test("reloadSessions: a session whose end throws too is counted, and the sessions after it are still asked", () => {
  class Stubborn extends StandIn {
    override endUnreloaded(why: string): void {
      super.endUnreloaded(why);
      throw new Error("could not end it either");
    }
  }
  const sessions = [new Stubborn(new Error("bug")), new StandIn(false), new StandIn(true)];
  let thrown: unknown = null;
  try {
    reloadSessions(sessions);
  } catch (error) {
    thrown = error;
  }
  expect(sessions.map((s) => s.asked)).toEqual([1, 1, 1]);
  expect(sessions[0]!.ended).toBe("bug");
  expect((thrown as SessionsNotReloaded).sessionsEnded).toBe(2);
});

test("commitListener: a TLS identity not set and a session that throws: both errors are told, the count kept", () => {
  const listener = {
    setIdentity() {
      throw new Error("no such identity");
    },
  };
  const identity = { cert: "", key: "" } as unknown as Parameters<typeof commitListener>[1];
  let thrown: unknown = null;
  try {
    commitListener(listener, identity, [new StandIn(new Error("bug")), new StandIn(true)]);
  } catch (error) {
    thrown = error;
  }
  expect(thrown).toBeInstanceOf(ReloadPartError);
  expect(thrown).not.toBeInstanceOf(SessionsNotReloaded);
  expect((thrown as Error).message).toBe(
    "the new TLS certificate could not be put in force (no such identity); 1 session(s) could not take the new " +
      "config (bug) and were ended",
  );
  expect((thrown as ReloadPartError).sessionsEnded).toBe(2);
});
