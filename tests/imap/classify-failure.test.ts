/**
 * The fail-closed path of a filtered SELECT when classification fails upstream, against the real Dovecot (the seed
 * config's rules: INBOX shows only notifications@ mail). Each scenario has a fresh user of its own whose seeded
 * INBOX holds one message file made unreadable (mode 0; Dovecot reads as the mail uid, not root) before the first
 * SELECT through the proxy, so Dovecot really fails the classification `UID FETCH a:b (UID BODY.PEEK[HEADER.FIELDS
 * (FROM)])` when it reaches that file.
 *
 * What Dovecot 2.3 answers depends on its `imap_fetch_failure` setting (measured here, and checked directly below):
 * - the default, `disconnect-immediately`: the FETCH responses up to the unreadable message, `* n FETCH (UID n)` for
 *   it, then `* BYE FETCH failed: Internal error occurred...` and it closes the connection. No tagged reply ever:
 *   Dovecot never answers NO to such a FETCH.
 * - `no-after` (set for one user only, as a userdb field in that user's passwd-file): every FETCH response (the
 *   unreadable message as `(UID n)` only), then a tagged `NO [SERVERBUG] Internal error occurred...`; the connection
 *   stays (a second failure of the same message in that connection would disconnect).
 *
 * With the tagged NO the proxy answers the agent's SELECT `NO [UNAVAILABLE]` with nothing about the mailbox before
 * it, and the session goes on unselected. With the stock BYE the proxy loses its only upstream connection mid-SELECT
 * and ends the agent's session (`* BYE Upstream connection lost`), again with nothing about the mailbox before it.
 * In both, restoring the file's mode lets a later SELECT show exactly the manifest's visible messages.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { chmodSync, chownSync, readdirSync, readFileSync, renameSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { AuditRow } from "../../src/audit/index.ts";
import { createMailbox, type SeededMessage, type TestMailbox, upstreams } from "../fixtures/index.ts";
import { type Expected, expected, expectNoLeak, fetchedUids, SEED_RULES } from "./filtered-fixture.ts";
import { RawImap, startTestProxy, statusOf, type TestProxy } from "./helpers.ts";

const ALLOW_RULE = "Transactional emails from known senders";
const REFUSAL = "NO [UNAVAILABLE] The mailbox could not be filtered; try again later";
/** Anything that would tell the agent about the mailbox or its messages. */
const MAILBOX_DATA = /EXISTS|RECENT|FETCH|UIDNEXT|UIDVALIDITY|UNSEEN|FLAGS|READ-ONLY|READ-WRITE|SEARCH/;

interface Scenario {
  readonly mailbox: TestMailbox;
  readonly e: Expected;
  /** The visible message whose file Dovecot cannot read. */
  readonly victim: SeededMessage;
  /** Its file's mode before it was made unreadable. */
  readonly mode: number;
}

let proxy: TestProxy;

/**
 * A fresh user with a seeded INBOX (visible and hidden messages), optionally with a per-user Dovecot setting in its
 * passwd-file (written before the user's first login, so Dovecot never saw the file without it), and one visible
 * message's file made unreadable.
 */
async function scenario(setting: string | null): Promise<Scenario> {
  const mailbox = await createMailbox({ seed: { folders: { INBOX: 60 }, seed: 23 } });
  if (setting !== null) {
    // passwd-file: user:password:uid:gid:gecos:home:shell:extra fields (fields for the userdb prefixed userdb_).
    const file = join(upstreams().usersDir, mailbox.user);
    const st = statSync(file);
    const line = readFileSync(file, "utf8").trimEnd();
    expect(line).toEndWith("::");
    const temporary = `${file}.classify-failure`;
    writeFileSync(temporary, `${line}userdb_${setting}\n`, { mode: st.mode & 0o777 });
    chownSync(temporary, st.uid, st.gid);
    renameSync(temporary, file);
  }
  const e = expected(mailbox.manifest.folders["INBOX"]!);
  expect(e.visible.length).toBeGreaterThan(5);
  expect(e.hidden.length).toBeGreaterThan(5);
  // In the middle, so that Dovecot answers for messages before it (and, with no-after, after it) first.
  const victim = e.visible[Math.floor(e.visible.length / 2)]!;
  const file = messageFile(mailbox, victim.uid);
  const mode = statSync(file).mode & 0o7777;
  chmodSync(file, 0);
  return { mailbox, e, victim, mode };
}

/** The seeder names message i's file `<1,000,000,000 + uid>.M...` in cur/ (scripts/upstreams/seed.ts). */
function messageFile(mailbox: TestMailbox, uid: number): string {
  const cur = join(mailbox.maildir, "cur");
  const name = readdirSync(cur).find((f) => f.startsWith(`${1_000_000_000 + uid}.`));
  if (name === undefined) throw new Error(`no file for UID ${uid} in ${cur}`);
  return join(cur, name);
}

function restore(s: Scenario): void {
  chmodSync(messageFile(s.mailbox, s.victim.uid), s.mode);
}

async function agent(mailbox: TestMailbox): Promise<RawImap> {
  return RawImap.login(proxy.port, mailbox);
}

/** Dovecot directly (implicit TLS), logged in, INBOX examined. */
async function dovecot(mailbox: TestMailbox): Promise<RawImap> {
  const raw = await RawImap.open(upstreams().ports.imaps, { tls: true });
  expect(statusOf(await raw.command("a", `LOGIN "${mailbox.user}" "${mailbox.password}"`), "a")).toStartWith("a OK");
  expect(statusOf(await raw.command("b", "EXAMINE INBOX"), "b")).toStartWith("b OK");
  return raw;
}

const CLASSIFY_FETCH = "UID FETCH 1:* (UID BODY.PEEK[HEADER.FIELDS (FROM)])";

/** Everything until the connection closes (a BYE has no tagged reply after it). */
async function untilClosed(raw: RawImap): Promise<string> {
  const bytes = await raw.readUntil(() => false, 15_000, "the connection was not closed");
  expect(raw.closed).toBe(true);
  return raw.take(bytes.length);
}

async function rowsOf(mailbox: TestMailbox): Promise<AuditRow[]> {
  return (await proxy.rows()).filter((r) => r.agent === mailbox.user);
}

/** A SELECT after the file is readable again: exactly the manifest's visible messages, numbered 1..n. */
async function expectVisible(raw: RawImap, s: Scenario): Promise<void> {
  const { e } = s;
  const selected = await raw.command("s", "SELECT INBOX");
  expect(statusOf(selected, "s")).toBe("s OK [READ-ONLY] SELECT completed");
  expect(selected).toContain(`* ${e.visible.length} EXISTS\r\n`);
  expect(selected).toContain(`[UIDNEXT ${e.visibleUids[e.visibleUids.length - 1]! + 1}]`);
  const fetched = await raw.command("f", "UID FETCH 1:* (UID)");
  expect(statusOf(fetched, "f")).toStartWith("f OK");
  expect(fetchedUids(fetched)).toEqual(e.visibleUids.map((uid, i) => [i + 1, uid] as [number, number]));
  expect(fetchedUids(fetched).some(([, uid]) => uid === s.victim.uid)).toBe(true);
  const body = await raw.command("b", `UID FETCH ${s.victim.uid} (BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])`);
  expect(body).toContain(s.victim.messageId);
  expectNoLeak(selected + fetched + body, e);
}

beforeAll(async () => {
  proxy = await startTestProxy({ rules: SEED_RULES });
});

afterAll(async () => {
  await proxy?.close();
});

describe("Dovecot with imap_fetch_failure = no-after: the classification FETCH gets a tagged NO", () => {
  let s: Scenario;

  beforeAll(async () => {
    s = await scenario("imap_fetch_failure=no-after");
  });

  afterAll(() => {
    if (s !== undefined) restore(s);
  });

  test("SELECT: NO [UNAVAILABLE], nothing before; unselected; audited; after repair, manifest's visible", async () => {
    const raw = await agent(s.mailbox);
    try {
      // Every byte the agent received for its SELECT: the refusal alone.
      const reply = await raw.command("s", "SELECT INBOX");
      expect(reply).not.toMatch(MAILBOX_DATA);
      expect(reply).toBe(`s ${REFUSAL}\r\n`);

      // The session survives, in the authenticated state.
      expect(await raw.command("n", "NOOP")).toBe("n OK NOOP completed\r\n");
      const list = await raw.command("l", 'LIST "" "*"');
      expect(statusOf(list, "l")).toStartWith("l OK");
      expect(list).toMatch(/^\* LIST \([^)]*\) "\/" INBOX\r\n/m);
      expect(await raw.command("f", "FETCH 1 (UID)")).toBe("f BAD No mailbox selected\r\n");
      expect(await raw.command("u", "UID FETCH 1:* (FLAGS)")).toBe("u BAD No mailbox selected\r\n");
      expect(await raw.command("c", "CLOSE")).toBe("c BAD No mailbox selected\r\n");

      // The audit log: one error row for that SELECT, naming the upstream's refusal; no allowed SELECT.
      const rows = await rowsOf(s.mailbox);
      const errors = rows.filter((r) => r.decision === "error");
      expect(errors.length).toBe(1);
      const row = errors[0]!;
      expect(row.command).toBe("SELECT");
      expect(row.operation).toBe("mail:read");
      expect(row.folder).toBe("INBOX");
      expect(row.rule).toBe(ALLOW_RULE);
      expect(row.reason).toStartWith("classification failed");
      expect(row.reason).toContain("UID FETCH failed upstream: Internal error occurred");
      expect(rows.some((r) => r.command === "SELECT" && r.decision === "allow")).toBe(false);

      // What Dovecot answered, on a connection of its own: a tagged NO, the unreadable message as its UID only.
      const direct = await dovecot(s.mailbox);
      const answer = await direct.command("d", CLASSIFY_FETCH);
      direct.close();
      expect(statusOf(answer, "d")).toStartWith("d NO [SERVERBUG] Internal error occurred");
      expect(answer).toContain(`FETCH (UID ${s.victim.uid})\r\n`);
      expect(answer).not.toContain("* BYE");

      // Readable again: the same session selects INBOX and sees exactly the manifest's visible messages.
      restore(s);
      await expectVisible(raw, s);
      const allowed = (await rowsOf(s.mailbox)).filter((r) => r.command === "SELECT" && r.decision === "allow");
      expect(allowed.length).toBe(1);
      expect(allowed[0]!.count).toBe(s.e.visible.length);
      expect(allowed[0]!.hiddenCount).toBe(s.e.hidden.length);
    } finally {
      raw.close();
    }
  });
});

describe("Dovecot as configured by default: the classification FETCH ends in BYE", () => {
  let s: Scenario;

  beforeAll(async () => {
    s = await scenario(null);
  });

  afterAll(() => {
    if (s !== undefined) restore(s);
  });

  test("BYE, nothing about the mailbox before it; audited; after repair, a new session shows manifest", async () => {
    const raw = await agent(s.mailbox);
    let bytes: string;
    try {
      raw.write("s SELECT INBOX\r\n");
      bytes = await untilClosed(raw);
    } finally {
      raw.close();
    }
    // Every byte the agent received after its SELECT: no tagged reply, only the end of the session.
    expect(bytes).not.toMatch(MAILBOX_DATA);
    expect(bytes).toBe("* BYE Upstream connection lost\r\n");

    // Every row after the login is an error (the lost upstream is recorded too); none allows the SELECT.
    const rows = await rowsOf(s.mailbox);
    expect(rows.length).toBeGreaterThan(1);
    expect(rows[0]!.command).toBe("LOGIN");
    for (const r of rows.slice(1)) expect(r.decision).toBe("error");
    expect(
      rows.some((r) => r.command === "(upstream)" && r.reason.includes("FETCH failed: Internal error occurred")),
    ).toBe(true);
    const classification = rows.filter((r) => r.decision === "error" && r.reason.startsWith("classification failed"));
    expect(classification.length).toBe(1);
    expect(classification[0]!.command).toBe("SELECT");
    expect(classification[0]!.folder).toBe("INBOX");
    expect(classification[0]!.reason).toContain("FETCH failed: Internal error occurred");
    // One row for the lost upstream and one for the SELECT: nothing written twice for the one failure.
    expect(
      rows
        .slice(1)
        .map((r) => r.command)
        .sort(),
    ).toEqual(["(upstream)", "SELECT"]);

    // What Dovecot answered, on a connection of its own: the unreadable message as its UID only, then BYE and close.
    const direct = await dovecot(s.mailbox);
    direct.write(`d ${CLASSIFY_FETCH}\r\n`);
    const answer = await untilClosed(direct);
    expect(answer).toContain(`FETCH (UID ${s.victim.uid})\r\n* BYE FETCH failed: Internal error occurred`);
    expect(answer).not.toMatch(/^d /m);

    restore(s);
    const again = await agent(s.mailbox);
    try {
      await expectVisible(again, s);
    } finally {
      again.close();
    }
  });
});
