/**
 * The LIST family against the real Dovecot: `\Noselect` parents (RFC 3501 §6.3.8, §6.3.9), LIST-EXTENDED (RFC 5258),
 * SPECIAL-USE (RFC 6154) and LIST-STATUS (RFC 5819), over a raw socket and with imapflow, compared with Dovecot's
 * own answers; then the same commands against hidden folders and a filtered INBOX (docs/protocol.md §2 "Folder
 * listings", §7.14): no hidden name, parent, special use, child, subscription or count shows.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { type AuditLog, AuditUnavailableError } from "../../src/audit/index.ts";
import { connectImap, createMailbox, type TestMailbox, upstreams } from "../fixtures/index.ts";
import { expected } from "./filtered-fixture.ts";
import { auditCursor, proxyClient, RawImap, startTestProxy, statusOf, type TestProxy } from "./helpers.ts";

async function login(port: number, m: TestMailbox): Promise<RawImap> {
  return RawImap.login(port, m);
}

/** Untagged lines of a reply. */
function lines(reply: string): string[] {
  return reply.split("\r\n").filter((l) => l.startsWith("* "));
}

const CHILDREN_AND_MARKS = new Set(["\\haschildren", "\\hasnochildren", "\\marked", "\\unmarked"]);
const USES = new Set(["\\all", "\\archive", "\\drafts", "\\flagged", "\\junk", "\\sent", "\\trash"]);

/**
 * A reply as a set of comparable lines. `\HasChildren`/`\HasNoChildren` may be given unasked (RFC 5258 §4), so they
 * are compared separately; `\Marked`/`\UnMarked` are never passed on (docs/protocol.md §2); special uses may be
 * given unasked (RFC 6154 §2) and are compared only when the command asked for them.
 */
function normalized(reply: string, uses: boolean): string[] {
  const out: string[] = [];
  for (const line of lines(reply)) {
    const m = /^\* (LIST|LSUB) \(([^)]*)\) ("."|NIL) (.*)$/.exec(line);
    if (m === null) {
      out.push(line);
      continue;
    }
    const attrs = m[2]!
      .split(" ")
      .filter(Boolean)
      .map((a) => a.toLowerCase())
      .filter((a) => !CHILDREN_AND_MARKS.has(a) && (uses || !USES.has(a)))
      .sort();
    // Dovecot quotes CHILDINFO's items or not; case and quotes do not matter (RFC 5258 §6).
    out.push(`${m[1]} (${attrs.join(" ")}) ${m[3]} ${m[4]!.replaceAll('"', "").toLowerCase()}`);
  }
  return out.sort();
}

/** `name → \HasChildren | \HasNoChildren` as listed. */
function children(reply: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of lines(reply)) {
    const m = /^\* (?:LIST|LSUB) \(([^)]*)\) (?:"."|NIL) ("[^"]*"|\S+)/.exec(line);
    if (m === null) continue;
    const c = m[1]!.split(" ").find((a) => /^\\Has(No)?Children$/i.test(a));
    if (c !== undefined) out.set(m[2]!.replaceAll('"', ""), c);
  }
  return out;
}

describe("allow-all: the LIST family as Dovecot answers it", () => {
  let mailbox: TestMailbox;
  let proxy: TestProxy;

  beforeAll(async () => {
    mailbox = await createMailbox();
    const human = await connectImap(mailbox);
    for (const name of ["a/b/c/d", "x/y", "p", "p/q"]) await human.mailboxCreate(name);
    for (const name of ["a/b/c/d", "x/y", "p/q", "gone"]) await human.mailboxSubscribe(name);
    await human.mailboxUnsubscribe("p");
    for (const [i, flags] of [[], ["\\Seen"], []].entries()) {
      await human.append("INBOX", `Subject: m${i}\r\nMessage-ID: <m${i}@list.test>\r\n\r\nbody ${i}\r\n`, flags);
    }
    await human.logout();
    proxy = await startTestProxy();
  });

  afterAll(async () => {
    await proxy?.close();
  });

  test("CAPABILITY offers LIST-EXTENDED, LIST-STATUS and SPECIAL-USE after login, not CREATE-SPECIAL-USE", async () => {
    const raw = await login(proxy.port, mailbox);
    const caps = lines(await raw.command("c", "CAPABILITY"))[0]!.split(" ");
    expect(caps).toContain("LIST-EXTENDED");
    expect(caps).toContain("LIST-STATUS");
    expect(caps).toContain("SPECIAL-USE");
    expect(caps).not.toContain("CREATE-SPECIAL-USE");
    raw.close();
  });

  test("a level without a folder is listed \\Noselect (RFC 3501 §6.3.8, §6.3.9)", async () => {
    const raw = await login(proxy.port, mailbox);
    expect(lines(await raw.command("a", 'LIST "" a/%'))).toEqual(['* LIST (\\Noselect \\HasChildren) "/" a/b']);
    const top = lines(await raw.command("b", 'LIST "" %'));
    expect(top).toContain('* LIST (\\Noselect \\HasChildren) "/" a');
    expect(top).toContain('* LIST (\\Noselect \\HasChildren) "/" x');
    expect(top).toContain('* LIST (\\HasChildren) "/" p');
    const all = lines(await raw.command("c", 'LIST "" *'));
    for (const n of ["a", "a/b", "a/b/c"]) expect(all).toContain(`* LIST (\\Noselect \\HasChildren) "/" ${n}`);
    expect(all).toContain('* LIST (\\HasNoChildren) "/" a/b/c/d');
    // LSUB: a level above a subscribed folder that % stops at (RFC 3501 §6.3.9).
    expect(lines(await raw.command("d", 'LSUB "" a/%'))).toEqual(['* LSUB (\\Noselect) "/" a/b']);
    const lsub = lines(await raw.command("e", 'LSUB "" %'));
    expect(lsub).toContain('* LSUB (\\Noselect) "/" a');
    expect(lsub).toContain('* LSUB (\\Noselect) "/" p');
    // With *, the subscribed names themselves match: no \Noselect level.
    expect(lines(await raw.command("f", 'LSUB "" *')).some((l) => l.includes("\\Noselect"))).toBe(false);
    raw.close();
  });

  test("every form answers what Dovecot answers", async () => {
    const viaProxy = await login(proxy.port, mailbox);
    const direct = await login(upstreams().ports.imap, mailbox);
    const commands = [
      'LIST "" %',
      'LIST "" *',
      'LIST "" a/%',
      'LIST "" a/%/%',
      "LIST a/ *",
      'LIST "" *c*',
      'LSUB "" %',
      'LSUB "" a/%',
      'LSUB "" *',
      'LIST (SUBSCRIBED) "" *',
      'LIST (SUBSCRIBED) "" % RETURN (CHILDREN)',
      'LIST (SUBSCRIBED RECURSIVEMATCH) "" % RETURN (CHILDREN)',
      'LIST (SUBSCRIBED RECURSIVEMATCH) "" a/%',
      'LIST (SUBSCRIBED RECURSIVEMATCH) "" (p p/q)',
      'LIST (SUBSCRIBED RECURSIVEMATCH) "" *q',
      'LIST "" (a a/b/c/*) RETURN (SUBSCRIBED)',
      'LIST "" (x/* INBOX) RETURN (SUBSCRIBED CHILDREN)',
      'LIST (REMOTE) "" %',
      'LIST (SPECIAL-USE) "" *',
      'LIST (SPECIAL-USE) "" * RETURN (SPECIAL-USE)',
      'LIST "" * RETURN (SPECIAL-USE)',
      'LIST "" % RETURN (STATUS (MESSAGES UNSEEN UIDNEXT UIDVALIDITY RECENT))',
      'LIST (SUBSCRIBED) "" * RETURN (STATUS (MESSAGES) SPECIAL-USE)',
    ];
    for (const [i, cmd] of commands.entries()) {
      const tag = `t${i}`;
      const mine = await viaProxy.command(tag, cmd);
      const theirs = await direct.command(tag, cmd);
      expect(statusOf(mine, tag)).toStartWith(`${tag} OK`);
      expect(statusOf(theirs, tag)).toStartWith(`${tag} OK`);
      const uses = cmd.includes("SPECIAL-USE");
      expect({ cmd, lines: normalized(mine, uses) }).toEqual({ cmd, lines: normalized(theirs, uses) });
      // Where Dovecot gives CHILDREN attributes, they agree.
      const mineChildren = children(mine);
      for (const [name, c] of children(theirs))
        expect({ cmd, name, c: mineChildren.get(name) }).toEqual({ cmd, name, c });
    }
    viaProxy.close();
    direct.close();
  });

  test("RFC 5258 §3: RECURSIVEMATCH alone, and unknown options, get BAD", async () => {
    const raw = await login(proxy.port, mailbox);
    for (const cmd of [
      'LIST (RECURSIVEMATCH) "" ""',
      'LIST (RECURSIVEMATCH REMOTE) "" ""',
      'LIST (IMAPTEST) "" ""',
      'LIST "" "" RETURN (IMAPTEST)',
      'LIST "" % RETURN (STATUS (SIZE))',
      'LIST "" % RETURN (STATUS (DELETED))',
    ]) {
      expect(statusOf(await raw.command("b", cmd), "b")).toStartWith("b BAD");
    }
    raw.close();
  });

  test("imapflow lists with LIST-STATUS and SPECIAL-USE", async () => {
    const newRows = auditCursor(proxy);
    await newRows();
    const client = await proxyClient(proxy.port, mailbox.user, mailbox.password);
    const listed = await client.list({ statusQuery: { messages: true, unseen: true, uidNext: true } });
    await client.logout();
    const by = new Map(listed.map((f) => [f.path, f]));
    expect(by.get("INBOX")?.status).toMatchObject({ messages: 3, unseen: 2, uidNext: 4 });
    expect(by.get("Sent")?.specialUse).toBe("\\Sent");
    expect(by.get("Drafts")?.specialUse).toBe("\\Drafts");
    expect(by.get("Trash")?.status?.messages).toBe(0);
    expect(by.get("p")).toBeDefined();
    expect(by.get("p")?.subscribed ?? false).toBe(false);
    expect(by.get("p/q")?.subscribed).toBe(true);
    // The levels without a folder are listed, not selectable, and carry no STATUS.
    for (const n of ["a", "a/b", "a/b/c", "x"]) {
      const f = by.get(n);
      expect(f).toBeDefined();
      expect([...(f?.flags ?? [])].some((a) => a === "\\NonExistent" || a === "\\Noselect")).toBe(true);
      expect(f?.status).toBeUndefined();
    }
    // imapflow took the LIST-STATUS path: the STATUS data came within LIST (one audit row per folder).
    const rows = (await newRows()).filter((r) => r.command === "LIST" && r.target === "RETURN (STATUS)");
    expect(rows.map((r) => r.folder).sort()).toEqual(
      ["Archive", "Drafts", "INBOX", "Junk", "Sent", "Trash", "a/b/c/d", "p", "p/q", "x/y"].sort(),
    );
  });

  test("CREATE with USE (RFC 6154 §5.2) is not offered: BAD, and nothing is created", async () => {
    const raw = await login(proxy.port, mailbox);
    expect(statusOf(await raw.command("c", "CREATE Outbox (USE (\\Sent))"), "c")).toStartWith("c BAD");
    raw.close();
    const human = await connectImap(mailbox);
    const names = (await human.list()).map((f) => f.path);
    await human.logout();
    expect(names).not.toContain("Outbox");
  });
});

describe("hidden folders and a filtered INBOX", () => {
  const RULES = `
[[rules]]
name = "hidden"
folders = ["Secret", "Secret/**", "Shown/Hidden", "Shown/Hidden/**", "Open/Hidden", "Open/Hidden/**", "Junk", "Vault"]
action = "deny"

[[rules]]
name = "filtered inbox"
folders = ["INBOX"]
from = "notifications@*"
action = "allow"
operations = ["read"]

[[rules]]
name = "write only"
folders = ["WriteOnly"]
action = "allow"
operations = ["folder:write"]

[[rules]]
name = "agent's own"
folders = ["Shown", "Shown/**", "Open", "Open/**", "Sent", "Drafts", "Trash", "Archive", "Vault/pub"]
action = "allow"

[[rules]]
name = "nothing else"
action = "deny"
`;
  let mailbox: TestMailbox;
  let proxy: TestProxy;
  const HIDDEN = ["Secret", "Hidden", "Junk", "Open"];

  beforeAll(async () => {
    mailbox = await createMailbox({
      seed: {
        folders: {
          INBOX: 60,
          Secret: 4,
          "Secret/sub": 2,
          Shown: 2,
          "Shown/Hidden": 3,
          Junk: 2,
          Vault: 3,
          "Vault/pub": 1,
        },
        seed: 14,
      },
    });
    const human = await connectImap(mailbox);
    // Open holds only a hidden folder: Dovecot lists Open as \Noselect \HasChildren.
    await human.mailboxCreate("Open/Hidden/x");
    await human.mailboxCreate("WriteOnly");
    for (const name of ["Open/Hidden/x", "Secret", "Secret/sub", "Shown/Hidden", "Shown"]) {
      await human.mailboxSubscribe(name);
    }
    await human.logout();
    proxy = await startTestProxy({ rules: RULES });
  });

  afterAll(async () => {
    await proxy?.close();
  });

  test("no listing form shows a hidden folder, its parent level, its special use or its subscription", async () => {
    const raw = await login(proxy.port, mailbox);
    const all: string[] = [];
    for (const cmd of [
      'LIST "" %',
      'LIST "" *',
      'LIST "" Open/%',
      'LIST "" Open',
      'LSUB "" %',
      'LSUB "" *',
      'LSUB "" Open/%',
      'LIST (SUBSCRIBED) "" *',
      'LIST (SUBSCRIBED RECURSIVEMATCH) "" % RETURN (CHILDREN)',
      'LIST (SUBSCRIBED RECURSIVEMATCH) "" (Shown Open)',
      'LIST (SPECIAL-USE) "" *',
      'LIST (SPECIAL-USE RECURSIVEMATCH) "" %',
      'LIST "" * RETURN (SPECIAL-USE SUBSCRIBED CHILDREN)',
      'LIST "" (Secret Secret/* Junk Open Open/*) RETURN (STATUS (MESSAGES))',
      'LIST "" * RETURN (STATUS (MESSAGES UNSEEN UIDNEXT))',
    ]) {
      const reply = await raw.command("l", cmd);
      expect(statusOf(reply, "l")).toStartWith("l OK");
      all.push(...lines(reply));
    }
    const text = all.join("\n");
    for (const h of HIDDEN) expect(text).not.toContain(h);
    expect(text).not.toContain("\\Junk");
    expect(text).not.toContain("CHILDINFO");
    // Shown's only child is hidden: a folder without children (RFC 3348, over visible folders).
    expect(all).toContain('* LIST (\\HasNoChildren) "/" Shown');
    raw.close();
    // Dovecot itself would have told: Open as a level, CHILDINFO for Shown and Open, \Junk.
    const direct = await login(upstreams().ports.imap, mailbox);
    const told = [
      await direct.command("a", 'LIST (SUBSCRIBED RECURSIVEMATCH) "" % RETURN (CHILDREN)'),
      await direct.command("b", 'LIST "" % RETURN (SPECIAL-USE)'),
    ].join("");
    direct.close();
    expect(told).toMatch(/\* LIST \([^)]*\) "\/" Open \(CHILDINFO/);
    expect(told).toMatch(/\* LIST \([^)]*\) "\/" Shown \(CHILDINFO/);
    expect(told).toContain("\\Junk");
  });

  test("a hidden folder above a visible one is a level without a folder: no counts, no subscription", async () => {
    const raw = await login(proxy.port, mailbox);
    expect(lines(await raw.command("a", 'LIST "" Vault'))).toEqual(['* LIST (\\Noselect \\HasChildren) "/" Vault']);
    expect(lines(await raw.command("b", 'LIST "" Vault* RETURN (STATUS (MESSAGES) SUBSCRIBED)'))).toEqual([
      '* LIST (\\NonExistent \\HasChildren) "/" Vault',
      '* LIST (\\HasNoChildren) "/" Vault/pub',
      "* STATUS Vault/pub (MESSAGES 1)",
    ]);
    expect(statusOf(await raw.command("c", "SELECT Vault"), "c")).toBe("c NO [NONEXISTENT] Mailbox does not exist");
    raw.close();
  });

  test("LIST-STATUS counts the filtered INBOX's visible messages only, as STATUS does", async () => {
    const e = expected(mailbox.manifest.folders["INBOX"]!);
    const visibleUnseen = e.visible.filter((m) => !m.flags.includes("\\Seen")).length;
    expect(e.hidden.length).toBeGreaterThan(5);
    const raw = await login(proxy.port, mailbox);
    const want = `* STATUS INBOX (MESSAGES ${e.visible.length} UNSEEN ${visibleUnseen}`;
    const listed = lines(await raw.command("l", 'LIST "" INBOX RETURN (STATUS (MESSAGES UNSEEN UIDNEXT UIDVALIDITY))'));
    expect(listed[0]).toBe('* LIST (\\HasNoChildren) "/" INBOX');
    expect(listed[1]).toStartWith(want);
    // The STATUS command's answer, unselected and selected, is the same line.
    const status = lines(await raw.command("s", "STATUS INBOX (MESSAGES UNSEEN UIDNEXT UIDVALIDITY)"));
    expect(status).toEqual([listed[1]!]);
    await raw.command("e", "EXAMINE INBOX");
    const selected = lines(
      await raw.command("m", 'LIST "" INBOX RETURN (STATUS (MESSAGES UNSEEN UIDNEXT UIDVALIDITY))'),
    );
    expect(selected[1]).toBe(listed[1]!);
    raw.close();
    // Dovecot's own count is larger: the difference is what the proxy hid.
    const direct = await login(upstreams().ports.imap, mailbox);
    const upstreamLine = lines(await direct.command("s", "STATUS INBOX (MESSAGES)"))[0]!;
    expect(upstreamLine).toBe(`* STATUS INBOX (MESSAGES ${e.visible.length + e.hidden.length})`);
    direct.close();
    const rows = (await proxy.rows()).filter((r) => r.command === "LIST" && r.folder === "INBOX");
    expect(rows.length).toBeGreaterThanOrEqual(2);
    for (const r of rows) expect([r.count, r.hiddenCount]).toEqual([e.visible.length, e.hidden.length]);
  });

  test("a folder the agent may not read is listed without STATUS; no STATUS for a hidden folder", async () => {
    const raw = await login(proxy.port, mailbox);
    const listed = lines(await raw.command("l", 'LIST "" * RETURN (STATUS (MESSAGES))'));
    expect(listed).toContain('* LIST (\\HasNoChildren) "/" WriteOnly');
    const statusNames = listed.filter((l) => l.startsWith("* STATUS ")).map((l) => l.split(" ")[2]);
    expect(statusNames.sort()).toEqual(["Archive", "Drafts", "INBOX", "Sent", "Shown", "Trash", "Vault/pub"].sort());
    raw.close();
  });

  test("imapflow sees the visible tree with its counts, nothing hidden", async () => {
    const e = expected(mailbox.manifest.folders["INBOX"]!);
    const client = await proxyClient(proxy.port, mailbox.user, mailbox.password);
    const listed = await client.list({ statusQuery: { messages: true, unseen: true } });
    await client.logout();
    expect(listed.map((f) => f.path).sort()).toEqual(
      ["Archive", "Drafts", "INBOX", "Sent", "Shown", "Trash", "Vault", "Vault/pub", "WriteOnly"].sort(),
    );
    expect(listed.find((f) => f.path === "INBOX")?.status?.messages).toBe(e.visible.length);
    expect(listed.some((f) => f.specialUse === "\\Junk")).toBe(false);
  });
});

describe("audit before data (docs/imap.md)", () => {
  /** The real log, except that the next allow row of a LIST throws as a failing log's record() does. */
  let refuseNextList = false;
  function failingOnCue(log: AuditLog): AuditLog {
    return new Proxy(log, {
      get(target, key) {
        if (key === "record") {
          return (ev: Parameters<AuditLog["record"]>[0]) => {
            if (refuseNextList && ev.decision === "allow" && ev.command === "LIST") {
              refuseNextList = false;
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

  test("a LIST-STATUS whose row is refused answers NO and nothing else; the next one answers in full", async () => {
    const mailbox = await createMailbox({ seed: { folders: { INBOX: 3, Archive: 2 } } });
    const proxy = await startTestProxy({ wrapAudit: failingOnCue });
    try {
      const raw = await login(proxy.port, mailbox);
      refuseNextList = true;
      const refused = await raw.command("r", 'LIST "" * RETURN (STATUS (MESSAGES))');
      expect(refused).toMatch(/^r NO \[UNAVAILABLE\] [^\r\n]*\r\n$/);
      const again = await raw.command("a", 'LIST "" * RETURN (STATUS (MESSAGES))');
      expect(again).toContain("* STATUS Archive (MESSAGES 2)\r\n");
      expect(again).toMatch(/\r\na OK [^\r\n]*\r\n$/);
      raw.close();
    } finally {
      await proxy.close();
    }
  });
});
