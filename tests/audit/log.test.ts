import { Database } from "bun:sqlite";
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { AuditLog, type AuditRow, MAX_TEXT_CHARS, SCHEMA_VERSION } from "../../src/audit/index.ts";
import { COLUMNS } from "../../src/audit/schema.ts";
import { loginKey } from "../../src/net/sessions.ts";
import { sampleEvent, scratchDir } from "./helpers.ts";

let scratch: ReturnType<typeof scratchDir>;
beforeEach(() => {
  scratch = scratchDir();
});
afterEach(() => scratch.remove());

describe("open", () => {
  test("creates a missing file with the current schema in WAL mode", async () => {
    const path = scratch.file("new.db");
    expect(existsSync(path)).toBe(false);
    const log = AuditLog.open(path);
    expect(log.healthy).toBe(true);
    await log.close();
    const db = new Database(path, { readonly: true });
    expect(db.query<{ user_version: number }, []>("PRAGMA user_version").get()?.user_version).toBe(SCHEMA_VERSION);
    expect(db.query<{ journal_mode: string }, []>("PRAGMA journal_mode").get()?.journal_mode).toBe("wal");
    const indexes = db.query<{ name: string }, []>("SELECT name FROM sqlite_master WHERE type = 'index'").all();
    expect(indexes.map((i) => i.name).sort()).toEqual(["audit_time"]);
    db.close();
  });

  test("reopening an existing log keeps its rows and does not migrate again", async () => {
    const path = scratch.file("reopen.db");
    const first = AuditLog.open(path);
    const id = await first.durable(sampleEvent());
    await first.close();
    const second = AuditLog.open(path);
    expect(second.query().map((r) => r.id)).toEqual([id]);
    expect(await second.durable(sampleEvent())).toBeGreaterThan(id);
    await second.close();
  });

  test("migrates a version-1 log: its rows stay, the three secondary indexes go, user_version is current", async () => {
    const path = scratch.file("v1.db");
    const db = new Database(path, { create: true });
    db.exec("PRAGMA journal_mode = WAL");
    db.exec(`CREATE TABLE audit (
       id INTEGER PRIMARY KEY AUTOINCREMENT, time INTEGER NOT NULL, session TEXT NOT NULL, agent TEXT, client_addr TEXT,
       protocol TEXT NOT NULL, command TEXT NOT NULL, operation TEXT, folder TEXT, target TEXT, decision TEXT NOT NULL,
       rule TEXT, rule_index INTEGER, reason TEXT NOT NULL, config_revision TEXT NOT NULL, count INTEGER,
       hidden_count INTEGER, detail TEXT);
     CREATE INDEX audit_time ON audit (time);
     CREATE INDEX audit_decision ON audit (decision);
     CREATE INDEX audit_agent ON audit (agent);
     CREATE INDEX audit_rule ON audit (rule);
     INSERT INTO audit (time, session, protocol, command, decision, reason, config_revision, agent)
       VALUES (1, 's1', 'imap', 'LOGIN', 'allow', 'ok', 'r1', 'old-agent');
     PRAGMA user_version = 1;`);
    db.close();
    // The CLI of the new build reads the v1 file as it is, before any proxy migrated it.
    const reader = AuditLog.open(path, { readonly: true });
    expect(reader.query({ agent: "old-agent" }).map((r) => r.command)).toEqual(["LOGIN"]);
    expect(reader.newestId()).toBe(1);
    await reader.close();
    const log = AuditLog.open(path);
    expect(log.query({ agent: "old-agent" }).map((r) => r.command)).toEqual(["LOGIN"]);
    const id = await log.durable(sampleEvent({ agent: "new-agent" }));
    expect(id).toBe(2);
    await log.close();
    const check = new Database(path, { readonly: true });
    expect(check.query<{ user_version: number }, []>("PRAGMA user_version").get()?.user_version).toBe(SCHEMA_VERSION);
    expect(
      check
        .query<{ name: string }, []>("SELECT name FROM sqlite_master WHERE type = 'index'")
        .all()
        .map((i) => i.name),
    ).toEqual(["audit_time"]);
    check.close();
  });

  test("migrates a file that predates the schema (user_version 0, other content untouched)", async () => {
    const path = scratch.file("old.db");
    const db = new Database(path, { create: true });
    db.exec("CREATE TABLE unrelated (x); INSERT INTO unrelated VALUES (1)");
    db.close();
    const log = AuditLog.open(path);
    await log.durable(sampleEvent());
    expect(log.query()).toHaveLength(1);
    await log.close();
  });

  test("two processes opening a new file at once both succeed", async () => {
    const path = scratch.file("race.db");
    const script = `import { AuditLog } from ${JSON.stringify(`${import.meta.dir}/../../src/audit/index.ts`)};
      const log = AuditLog.open(process.argv[1]); await log.close(); console.log("ok");`;
    const children = [0, 1, 2].map(() =>
      Bun.spawn([process.execPath, "-e", script, path], { stdout: "pipe", stderr: "pipe" }),
    );
    for (const child of children) {
      expect(await child.exited).toBe(0);
      expect((await new Response(child.stdout).text()).trim()).toBe("ok");
    }
  });
});

describe("batched writer", () => {
  test("100,000 decisions through record() are all read back by query", async () => {
    const log = AuditLog.open(scratch.file("bulk.db"));
    const start = 1_700_000_000_000;
    const decisions = ["allow", "deny", "ask", "error"] as const;
    for (let i = 0; i < 100_000; i++) {
      log.record(
        sampleEvent({
          time: start + i,
          session: `s-${i % 97}`,
          agent: i % 2 === 0 ? "even-agent" : "odd-agent",
          decision: decisions[i % 4] ?? "allow",
          rule: i % 10 === 0 ? null : `rule-${i % 7}`,
          ruleIndex: i % 10 === 0 ? null : i % 7,
          target: `target-${i}`,
          count: i,
          hiddenCount: i % 3,
          detail: i % 1000 === 0 ? { size: i, code: "250", tls: true, note: null } : null,
        }),
      );
    }
    expect(log.queued).toBe(100_000);
    await log.flush();
    expect(log.queued).toBe(0);

    const rows = log.query({ order: "asc" });
    expect(rows).toHaveLength(100_000);
    for (const i of [0, 1, 2, 3, 999, 1000, 54_321, 99_999]) {
      const row = rows[i] as AuditRow;
      expect(row.time).toBe(start + i);
      expect(row.target).toBe(`target-${i}`);
      expect(row.session).toBe(`s-${i % 97}`);
      expect(row.decision).toBe(decisions[i % 4] ?? "allow");
      expect(row.count).toBe(i);
      expect(row.hiddenCount).toBe(i % 3);
      expect(row.rule).toBe(i % 10 === 0 ? null : `rule-${i % 7}`);
      expect(row.detail).toEqual(i % 1000 === 0 ? { size: i, code: "250", tls: true, note: null } : null);
    }
    const ids = rows.map((r) => r.id);
    expect(new Set(ids).size).toBe(100_000);
    expect(ids).toEqual([...ids].sort((a, b) => a - b));
    expect(log.query({ decision: "deny" })).toHaveLength(25_000);
    expect(log.query({ agent: "odd-agent", decision: "deny" })).toHaveLength(25_000);
    expect(log.query({ rule: "rule-3" }).length).toBeGreaterThan(0);
    await log.close();
  }, 60_000);

  test("record() rows reach the disk on the timer without flush()", async () => {
    const path = scratch.file("timer.db");
    const log = AuditLog.open(path, { batchMs: 10 });
    log.record(sampleEvent());
    expect(log.queued).toBe(1);
    await Bun.sleep(60);
    expect(log.queued).toBe(0);
    const reader = AuditLog.open(path, { readonly: true });
    expect(reader.query()).toHaveLength(1);
    await reader.close();
    await log.close();
  });

  test("durable() resolves with the committed id; calls in one turn share a commit", async () => {
    const log = AuditLog.open(scratch.file("durable.db"));
    log.record(sampleEvent({ target: "before" }));
    const ids = await Promise.all([1, 2, 3].map((n) => log.durable(sampleEvent({ target: `d${n}` }))));
    // the row queued by record() before them is committed first
    expect(log.queued).toBe(0);
    const rows = log.query({ order: "asc" });
    expect(rows.map((r) => r.target)).toEqual(["before", "d1", "d2", "d3"]);
    expect(ids).toEqual(rows.slice(1).map((r) => r.id));
    await log.close();
  });

  test("durableWithin() waits for company: rows queued at different times share commitNow()'s commit", async () => {
    const log = AuditLog.open(scratch.file("within.db"), { batchMs: 10_000 });
    const first = log.durableWithin(sampleEvent({ target: "w1" }), 5_000);
    await Bun.sleep(30); // several turns of the event loop: nothing committed yet
    log.record(sampleEvent({ target: "r" }));
    const second = log.durableWithin(sampleEvent({ target: "w2" }), 5_000);
    await Bun.sleep(30);
    expect(log.queued).toBe(3);
    expect(log.query()).toEqual([]);
    log.commitNow();
    // committed before commitNow() returned; the promises settle right after
    expect(log.queued).toBe(0);
    expect(log.query({ order: "asc" }).map((r) => r.target)).toEqual(["w1", "r", "w2"]);
    const rows = log.query({ order: "asc" });
    expect(await Promise.all([first, second])).toEqual([rows[0]!.id, rows[2]!.id]);
    await log.close();
  });

  test("commitNow() commits one batch at once and leaves a backlog to the drain, a batch per turn", async () => {
    const log = AuditLog.open(scratch.file("within-backlog.db"), { maxBatch: 10, batchMs: 10_000 });
    const waiting = Array.from({ length: 25 }, (_, i) => log.durableWithin(sampleEvent({ target: `b${i}` }), 5_000));
    log.commitNow();
    expect(log.queued).toBe(15);
    const ids = await Promise.all(waiting);
    expect(log.queued).toBe(0);
    expect(log.query({ order: "asc" }).map((r) => r.id)).toEqual(ids);
    await log.close();
  });

  test("the rows of one group are committed together, past maxBatch: an operation's rows all or none", async () => {
    const log = AuditLog.open(scratch.file("group.db"), { maxBatch: 2, batchMs: 10_000 });
    log.record(sampleEvent({ target: "read" }));
    const group = {};
    const rows = [1, 2, 3].map((n) => log.durableWithin(sampleEvent({ target: `message ${n}` }), 5_000, { group }));
    log.commitNow(); // one transaction: maxBatch rows, then the rest of the last row's group
    expect(log.queued).toBe(0);
    await Promise.all(rows);
    // Rows of no group are cut at maxBatch as before.
    for (let i = 0; i < 3; i++) log.record(sampleEvent({ target: `plain ${i}` }));
    log.commitNow();
    expect(log.queued).toBe(1);
    await log.flush();
    // A group that begins inside a batch: the batch takes the rest of it.
    const other = {};
    log.record(sampleEvent({ target: "before" }));
    const more = [1, 2].map((n) => log.durableWithin(sampleEvent({ target: `other ${n}` }), 5_000, { group: other }));
    log.commitNow();
    expect(log.queued).toBe(0);
    await Promise.all(more);
    await log.close();
  });

  test("a shorter wait asked later still holds: the commit is due at the earliest deadline", async () => {
    const log = AuditLog.open(scratch.file("within-earliest.db"), { batchMs: 10_000 });
    const started = performance.now();
    void log.durableWithin(sampleEvent({ target: "long" }), 10_000);
    await log.durableWithin(sampleEvent({ target: "short" }), 30);
    expect(performance.now() - started).toBeLessThan(2_000);
    expect(
      log
        .query()
        .map((r) => r.target)
        .sort(),
    ).toEqual(["long", "short"]);
    await log.close();
  });

  test("durableWithin() commits on its own after the wait when nobody asks", async () => {
    const log = AuditLog.open(scratch.file("within-timer.db"), { batchMs: 10_000 });
    const started = performance.now();
    const id = await log.durableWithin(sampleEvent({ target: "late" }), 40);
    const waited = performance.now() - started;
    expect(waited).toBeGreaterThanOrEqual(35);
    expect(log.query().map((r) => [r.id, r.target])).toEqual([[id, "late"]]);
    await log.close();
  });

  test("a commitNow() that fails rejects the waiting rows and keeps them for the retry", async () => {
    const log = AuditLog.open(scratch.file("within-fail.db"), { maxBytes: 64 * 1024, log: () => {} });
    const big = "x".repeat(3000);
    // About 150 KB of rows waiting for company in a file limited to 64 KB: their commit cannot succeed.
    const waiting = Array.from({ length: 50 }, () =>
      log.durableWithin(sampleEvent({ reason: big, detail: { big } }), 5_000),
    );
    const outcomes = Promise.allSettled(waiting);
    log.commitNow();
    expect(log.healthy).toBe(false);
    expect(log.queued).toBe(50);
    const settled = await outcomes;
    expect(settled.every((o) => o.status === "rejected" && String(o.reason).includes("cannot write"))).toBe(true);
    await log.close().catch(() => {});
  });

  test("close() flushes what is queued; the log refuses afterwards", async () => {
    const path = scratch.file("close.db");
    const log = AuditLog.open(path, { batchMs: 10_000 });
    for (let i = 0; i < 10; i++) log.record(sampleEvent());
    await log.close();
    expect(log.healthy).toBe(false);
    expect(() => log.record(sampleEvent())).toThrow("is closed");
    await expect(log.durable(sampleEvent())).rejects.toThrow("is closed");
    const reader = AuditLog.open(path, { readonly: true });
    expect(reader.query()).toHaveLength(10);
    expect(() => reader.record(sampleEvent())).toThrow("read-only");
    await reader.close();
  });

  test("an unknown decision is a programming error, refused before it is queued", async () => {
    const log = AuditLog.open(scratch.file("bad.db"));
    // @ts-expect-error deliberately wrong
    expect(() => log.record(sampleEvent({ decision: "maybe" }))).toThrow("unknown decision");
    expect(log.queued).toBe(0);
    await log.close();
  });
});

describe("query", () => {
  test("filters by time, decision, agent, rule, session, protocol, id; orders and limits", async () => {
    const log = AuditLog.open(scratch.file("query.db"));
    const t = 1_000_000;
    const ids: number[] = [];
    ids.push(await log.durable(sampleEvent({ time: t, agent: "a", decision: "allow", rule: "r1" })));
    ids.push(
      await log.durable(sampleEvent({ time: t + 10, agent: "b", decision: "deny", rule: null, ruleIndex: null })),
    );
    ids.push(
      await log.durable(sampleEvent({ time: t + 20, agent: "a", decision: "deny", rule: "r2", session: "s-2" })),
    );
    ids.push(await log.durable(sampleEvent({ time: t + 30, agent: null, protocol: "smtp", decision: "error" })));
    const [id0, id1, id2, id3] = ids as [number, number, number, number];

    expect(log.query().map((r) => r.id)).toEqual([id3, id2, id1, id0]);
    expect(log.query({ order: "asc", limit: 2 }).map((r) => r.id)).toEqual([id0, id1]);
    expect(log.query({ sinceMs: t + 10, untilMs: t + 30 }).map((r) => r.id)).toEqual([id2, id1]);
    expect(log.query({ decision: "deny" }).map((r) => r.id)).toEqual([id2, id1]);
    expect(log.query({ agent: "a" }).map((r) => r.id)).toEqual([id2, id0]);
    expect(log.query({ rule: "r2" }).map((r) => r.id)).toEqual([id2]);
    expect(log.query({ session: "s-2" }).map((r) => r.id)).toEqual([id2]);
    expect(log.query({ protocol: "smtp" }).map((r) => r.id)).toEqual([id3]);
    expect(log.query({ afterId: id1, order: "asc" }).map((r) => r.id)).toEqual([id2, id3]);
    expect(log.query({ beforeId: id2 }).map((r) => r.id)).toEqual([id1, id0]);
    expect(log.query({ limit: 0 })).toEqual([]);

    const row = log.query({ afterId: id2, limit: 1, order: "asc" })[0];
    expect(row).toEqual({
      ...sampleEvent({ agent: null, protocol: "smtp", decision: "error" }),
      id: id3,
      time: t + 30,
      count: null,
      hiddenCount: null,
      detail: null,
    });
    await log.close();
  });

  test("the agent compares without case: a pass-through login is stored as typed (docs/audit.md)", async () => {
    const log = AuditLog.open(scratch.file("agent-case.db"));
    const ids: number[] = [];
    for (const agent of ["Alice@Corp.test", "alice@corp.test", "ALICE@CORP.TEST", "bob@corp.test"]) {
      ids.push(await log.durable(sampleEvent({ agent })));
    }
    expect(log.query({ agent: "alice@corp.test", order: "asc" }).map((r) => r.id)).toEqual(ids.slice(0, 3));
    expect(log.query({ agent: "aLiCe@cOrP.TeSt" })).toHaveLength(3);
    expect(log.query({ agent: "BOB@corp.test" }).map((r) => r.agent)).toEqual(["bob@corp.test"]);
    expect(log.query({ agent: "alice" })).toEqual([]);
    await log.close();
  });

  test("the agent is folded as quotas fold a login, in any letter's case, not ASCII's alone", async () => {
    const path = scratch.file("agent-fold.db");
    const log = AuditLog.open(path);
    // U+212A KELVIN SIGN lower-cases to `k`: one login for quotas (loginKey), so one for the filter.
    const stored = ["Élodie@x.test", "ÉLODIE@X.TEST", "élodie@x.test", "elodie@x.test", "\u212Aate@x.test", null];
    const ids: number[] = [];
    for (const agent of stored) ids.push(await log.durable(sampleEvent({ agent })));
    await log.close();
    // The reader the CLI opens, read-only, folds the same way as the writer's connection.
    const reader = AuditLog.open(path, { readonly: true });
    const agents = (agent: string) => reader.query({ agent, order: "asc" }).map((r) => r.agent);
    expect(agents("élodie@x.test")).toEqual(["Élodie@x.test", "ÉLODIE@X.TEST", "élodie@x.test"]);
    expect(agents("ÉLODIE@x.test")).toEqual(["Élodie@x.test", "ÉLODIE@X.TEST", "élodie@x.test"]);
    expect(reader.count({ agent: "Élodie@X.test" })).toBe(3);
    // Another name: without the accent, or at another domain.
    expect(agents("elodie@x.test")).toEqual(["elodie@x.test"]);
    expect(agents("élodie@y.test")).toEqual([]);
    expect(agents("KATE@x.test")).toEqual(["\u212Aate@x.test"]);
    // With the other filters: the range of a --follow poll, and --limit's newest first.
    expect(reader.query({ agent: "élodie@x.test", afterId: ids[1]! }).map((r) => r.id)).toEqual([ids[2]!]);
    expect(reader.query({ agent: "élodie@x.test", limit: 1 }).map((r) => r.id)).toEqual([ids[2]!]);
    // Each stored spelling matches exactly the names quotas count as the same login.
    for (const agent of stored) {
      if (agent === null) continue;
      const same = stored.filter((a) => a !== null && loginKey(a) === loginKey(agent));
      expect(agents(agent)).toEqual(same);
    }
    await reader.close();
  });

  test("no view or trigger of the file can call the agent filter's function, only the log's own queries", async () => {
    // A file from elsewhere whose `audit` is a view calling it, read as `mailgator audit` reads: refused, as
    // docs/audit.md "Schema" says (directOnly), rather than run by SQL the file brings.
    const foreign = scratch.file("foreign-view.db");
    const db = new Database(foreign, { create: true });
    db.exec(
      `CREATE TABLE real (id INTEGER PRIMARY KEY, ${COLUMNS.join(", ")});
       CREATE VIEW audit AS SELECT * FROM real WHERE mailgator_same_agent(agent, 'bob') = 1;
       PRAGMA user_version = ${SCHEMA_VERSION};`,
    );
    db.close();
    const reader = AuditLog.open(foreign, { readonly: true });
    expect(() => reader.query()).toThrow("unsafe use of mailgator_same_agent()");
    await reader.close();
    // A trigger on the table of a log the proxy would write: the log does not open (its insert is refused).
    const path = scratch.file("trigger.db");
    await AuditLog.open(path).close();
    const raw = new Database(path);
    raw.exec("CREATE TRIGGER t AFTER INSERT ON audit BEGIN SELECT mailgator_same_agent(new.agent, 'x'); END");
    raw.close();
    expect(() => AuditLog.open(path)).toThrow("unsafe use of mailgator_same_agent()");
  });
});

describe("retention", () => {
  test("prune() deletes rows older than the retention and ids are never reused", async () => {
    const log = AuditLog.open(scratch.file("prune.db"));
    const now = Date.now();
    const day = 24 * 60 * 60 * 1000;
    log.record(sampleEvent({ time: now - 40 * day, target: "old" }));
    log.record(sampleEvent({ time: now - 31 * day, target: "old" }));
    log.record(sampleEvent({ time: now - 29 * day, target: "kept" }));
    // A second before now, not now: prune(0) deletes rows strictly older than the moment it runs, which can be the
    // same millisecond as `now` (the row then stayed, and the count below was 1 in one CI run).
    log.record(sampleEvent({ time: now - 1000, target: "kept" }));
    await log.flush();
    const newest = log.query({ limit: 1 })[0]?.id ?? 0;
    expect(log.prune(30)).toBe(2);
    expect(log.query().map((r) => r.target)).toEqual(["kept", "kept"]);
    expect(log.prune(0)).toBe(2);
    expect(log.query()).toEqual([]);
    expect(await log.durable(sampleEvent())).toBeGreaterThan(newest);
    await log.close();
  });

  test("retentionDays prunes at open", async () => {
    const path = scratch.file("retention.db");
    const first = AuditLog.open(path);
    first.record(sampleEvent({ time: Date.now() - 8 * 24 * 60 * 60 * 1000 }));
    first.record(sampleEvent());
    await first.close();
    const messages: string[] = [];
    const second = AuditLog.open(path, { retentionDays: 7, log: (m, level) => messages.push(`${level}: ${m}`) });
    expect(second.query()).toHaveLength(1);
    // Routine: serve logs it at info, not among the failures (error).
    expect(messages).toEqual(["info: audit: pruned 1 rows older than 7 days"]);
    await second.close();
  });
});

describe("what a row may hold", () => {
  test("the schema has the fields docs/audit.md lists and no column for a body, credential or token", async () => {
    const path = scratch.file("schema.db");
    await AuditLog.open(path).close();
    const db = new Database(path, { readonly: true });
    const columns = db
      .query<{ name: string }, []>("PRAGMA table_info(audit)")
      .all()
      .map((c) => c.name);
    db.close();
    expect(columns).toEqual([
      "id",
      "time",
      "session",
      "agent",
      "client_addr",
      "protocol",
      "command",
      "operation",
      "folder",
      "target",
      "decision",
      "rule",
      "rule_index",
      "reason",
      "config_revision",
      "count",
      "hidden_count",
      "detail",
    ]);
    for (const name of columns) expect(name).not.toMatch(/body|content|password|secret|token|credential|auth/);
  });

  test("long text and a large detail are cut, so a row cannot carry a body", async () => {
    const path = scratch.file("long.db");
    const log = AuditLog.open(path);
    await log.durable(sampleEvent({ reason: "x".repeat(10_000), detail: { note: "y".repeat(10_000) } }));
    await log.close();
    const reader = AuditLog.open(path, { readonly: true });
    const [long] = reader.query();
    expect(long?.reason).toHaveLength(MAX_TEXT_CHARS);
    expect(long?.reason.endsWith("…")).toBe(true);
    expect(Object.keys(long?.detail ?? {})).toEqual(["truncated"]);
    await reader.close();
  });

  test("a cut never leaves half of a surrogate pair, which SQLite would store as U+FFFD", async () => {
    const path = scratch.file("pair.db");
    const log = AuditLog.open(path);
    // "😀" (two UTF-16 units) straddles the cut: a text field keeps MAX_TEXT_CHARS - 1 units before its `…`.
    const text = `${"x".repeat(MAX_TEXT_CHARS - 2)}😀tail`;
    const json = JSON.stringify({ note: "" }).length;
    await log.durable(sampleEvent({ reason: text, folder: text, detail: { note: `${"y".repeat(2048 - json)}😀` } }));
    await log.close();
    const reader = AuditLog.open(path, { readonly: true });
    const [row] = reader.query();
    for (const field of [row?.reason, row?.folder]) {
      expect(field).toBe(`${"x".repeat(MAX_TEXT_CHARS - 2)}…`);
      expect(field).not.toContain("\ufffd");
    }
    expect(String(row?.detail?.["truncated"])).not.toContain("\ufffd");
    await reader.close();
  });
});
