/**
 * Transparency to the letter (docs/conformance.md): what Dovecot answers directly, Mailgator in pass-through with
 * allow-all rules answers too, and in a filtered folder the same answers restricted to the agent's view; for the
 * cases Dovecot's conformance tester found different:
 *
 * - NOOP and CHECK relay other sessions' flag changes (`* n FETCH (FLAGS ...)`, RFC 3501 §6.1.2, §6.4.1, §7.4.2) in
 *   upstream's order among the expunges, and `* n RECENT` (§7.3.2) with EXISTS. A filtered folder relays them for
 *   visible messages only, renumbered; a hidden message's flag change or arrival says nothing at all.
 * - LIST shows a parent that does not exist but has a visible child as `\Noselect` (RFC 3501 §6.3.8, and LSUB
 *   §6.3.9 for `%`); a parent whose only children are hidden stays nonexistent.
 * - A mailbox name that is not valid modified UTF-7 (§5.1.3) is answered `NO` (LIST: `OK`, nothing listed), and a
 *   failed SELECT deselects (§6.3.1), as Dovecot does; before login it stays `BAD`.
 * - `CREATE a/b/` (a trailing hierarchy delimiter, §6.3.3) creates `a/b`, and is refused where `CREATE a/b` is.
 *
 * Each scenario runs against Dovecot directly and through the proxy, each with a fresh user: the two transcripts
 * must be the same (or, for LIST, the direct answers meet the same expectations), besides matching what the RFC says.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createMailbox, type TestMailbox, upstreams } from "../fixtures/index.ts";
import { expected, rawMessage, SEED_RULES } from "./filtered-fixture.ts";
import { RawImap, startTestProxy, statusOf, type TestProxy } from "./helpers.ts";

const HIDE_SECRET = `[[rules]]
name = "secret folders"
folders = ["**/secret", "**/secret/**"]
action = "deny"

[[rules]]
name = "everything else"
action = "allow"
`;

/** INBOX may be opened and appended to, not read: its messages' flags are the agent's to see nowhere. */
const NO_READ = `[[rules]]
name = "inbox without reading"
folders = ["INBOX"]
operations = ["folder:read", "mail:append"]
action = "allow"

[[rules]]
name = "everything else"
action = "deny"
`;

/** INBOX may be opened and its flags set, not read. */
const FLAG_NO_READ = `[[rules]]
name = "inbox flags without reading"
folders = ["INBOX"]
operations = ["folder:read", "mail:flag"]
action = "allow"

[[rules]]
name = "everything else"
action = "deny"
`;

let allowAll: TestProxy;
let hideSecret: TestProxy;
let filtered: TestProxy;
let noRead: TestProxy;
let flagNoRead: TestProxy;

beforeAll(async () => {
  [allowAll, hideSecret, filtered, noRead, flagNoRead] = await Promise.all([
    startTestProxy({ upstreamTls: "none" }),
    startTestProxy({ upstreamTls: "none", rules: HIDE_SECRET }),
    startTestProxy({ upstreamTls: "none", rules: SEED_RULES }),
    startTestProxy({ upstreamTls: "none", rules: NO_READ }),
    startTestProxy({ upstreamTls: "none", rules: FLAG_NO_READ }),
  ]);
});

afterAll(async () => {
  await Promise.all([allowAll?.close(), hideSecret?.close(), filtered?.close(), noRead?.close(), flagNoRead?.close()]);
});

/** The human's mail app: straight at Dovecot. */
function human(mailbox: TestMailbox): Promise<RawImap> {
  return RawImap.login(upstreams().ports.imap, mailbox);
}

async function ok(raw: RawImap, command: string): Promise<string> {
  const reply = await raw.command("h", command);
  expect(`${command} → ${statusOf(reply, "h")}`).toStartWith(`${command} → h OK`);
  return reply;
}

async function append(raw: RawImap, folder: string, message: string): Promise<void> {
  await ok(raw, `APPEND ${folder} {${Buffer.byteLength(message)}+}\r\n${message}`);
}

/** The untagged lines of a reply, in order. */
function untagged(reply: string): string[] {
  return reply.split("\r\n").filter((l) => l.startsWith("* "));
}

function recentOf(reply: string): number | null {
  const m = /^\* (\d+) RECENT\r$/m.exec(reply);
  return m === null ? null : Number(m[1]);
}

type Target = "direct" | "proxy";
const TARGETS: readonly Target[] = ["direct", "proxy"];

function portOf(target: Target, proxy: TestProxy): number {
  return target === "direct" ? upstreams().ports.imap : proxy.port;
}

/** LIST or LSUB lines as `name (attributes, sorted, upper-cased)`, sorted; CHILDREN attributes kept. */
function listed(reply: string, kind: "LIST" | "LSUB" = "LIST"): string[] {
  const out: string[] = [];
  for (const m of reply.matchAll(
    new RegExp(`^\\* ${kind} \\(([^)]*)\\) (?:"[^"]*"|NIL) ("?)([^\\r\\n]*)\\2\\r$`, "gm"),
  )) {
    const attributes = m[1]!
      .split(" ")
      .filter(Boolean)
      .map((a) => a.toUpperCase())
      .sort();
    out.push(`${m[3]} (${attributes.join(" ")})`);
  }
  return out.sort();
}

describe("NOOP and CHECK relay other sessions' changes, as Dovecot does (RFC 3501 §6.1.2, §6.4.1, §7.4.2)", () => {
  /** One agent session, another session changing the mailbox; what the agent's NOOP or CHECK answered. */
  async function transcript(verb: "NOOP" | "CHECK", via: Target): Promise<string[][]> {
    const mailbox = await createMailbox({ name: `fix-${verb}-${via}` });
    const other = await human(mailbox);
    for (let i = 1; i <= 4; i++) await append(other, "INBOX", rawMessage("a@b.test", `Message ${i}`, `m${i}`));
    const agent = await RawImap.login(portOf(via, allowAll), mailbox);
    const selected = await agent.command("s", "SELECT INBOX");
    expect(statusOf(selected, "s")).toStartWith("s OK");
    expect(recentOf(selected)).toBe(4);
    const out: string[][] = [];
    const step = async (tag: string) => {
      const reply = await agent.command(tag, verb);
      expect(statusOf(reply, tag)).toStartWith(`${tag} OK`);
      out.push(untagged(reply));
    };
    await ok(other, "SELECT INBOX");
    await ok(other, "STORE 2 +FLAGS.SILENT (\\Seen)");
    await step("n1");
    // Flag changes among expunges: each FETCH numbered after the expunges before it.
    await ok(other, "STORE 1,3 +FLAGS.SILENT (\\Deleted)");
    await ok(other, "STORE 2,4 FLAGS.SILENT (\\Flagged)");
    await ok(other, "EXPUNGE");
    await step("n2");
    // An arrival while no other session has INBOX selected is \Recent in the agent's (RFC 3501 §2.3.2).
    await ok(other, "UNSELECT");
    await append(other, "INBOX", rawMessage("a@b.test", "Message 5", "m5"));
    await step("n3");
    await step("n4");
    agent.close();
    other.close();
    return out;
  }

  for (const verb of ["NOOP", "CHECK"] as const) {
    test(`${verb}: FETCH FLAGS, EXPUNGE in upstream's order, EXISTS and RECENT, the same as directly`, async () => {
      const [direct, proxy] = await Promise.all([transcript(verb, "direct"), transcript(verb, "proxy")]);
      expect(proxy).toEqual(direct);
      const [first, second, third, fourth] = proxy;
      expect(first).toEqual(["* 2 FETCH (FLAGS (\\Seen \\Recent))"]);
      // Dovecot expunges from the highest number down: 3, then 1.
      expect(second!.filter((l) => l.endsWith("EXPUNGE"))).toEqual(["* 3 EXPUNGE", "* 1 EXPUNGE"]);
      expect(second!.filter((l) => l.includes("FETCH")).length).toBe(2);
      for (const l of second!.filter((l) => l.includes("FETCH"))) expect(l).toContain("\\Flagged");
      expect(third).toEqual(["* 3 EXISTS", "* 3 RECENT"]);
      expect(fourth).toEqual([]);
    });
  }

  test("filtered: a hidden message's flag change and arrival say nothing; a visible one's, renumbered", async () => {
    const mailbox = await createMailbox({ seed: { folders: { INBOX: 40 }, seed: 31 } });
    const e = expected(mailbox.manifest.folders["INBOX"]!);
    expect(e.visible.length).toBeGreaterThan(4);
    expect(e.hidden.length).toBeGreaterThan(4);
    const agent = await RawImap.login(filtered.port, mailbox);
    const selected = await agent.command("s", "EXAMINE INBOX");
    expect(selected).toContain(`* ${e.visible.length} EXISTS\r\n`);
    const recent = recentOf(selected)!;
    expect(recent).toBeGreaterThanOrEqual(0);
    const other = await human(mailbox);
    await ok(other, "SELECT INBOX");

    // Messages that are not \Flagged yet, so that flagging them is a change upstream reports.
    const hidden = e.hidden.find((m) => !m.flags.includes("\\Flagged"))!;
    const at = e.visible.findIndex((m, i) => i > 0 && !m.flags.includes("\\Flagged"));
    expect(at).toBeGreaterThan(0);

    // A hidden message's flag change: nothing, for NOOP and for CHECK.
    await ok(other, `UID STORE ${hidden.uid} +FLAGS.SILENT (\\Flagged)`);
    const direct = await other.command("d", "NOOP");
    expect(statusOf(direct, "d")).toStartWith("d OK");
    for (const verb of ["NOOP", "CHECK"]) expect(untagged(await agent.command("q", verb))).toEqual([]);

    // A visible one's: the agent's own number, its position among the visible messages.
    await ok(other, `UID STORE ${e.visibleUids[at]!} +FLAGS.SILENT (\\Flagged)`);
    const flagged = untagged(await agent.command("n", "NOOP"));
    expect(flagged).toHaveLength(1);
    expect(flagged[0]).toMatch(new RegExp(`^\\* ${at + 1} FETCH \\(FLAGS \\([^)]*\\\\Flagged[^)]*\\)\\)$`));

    // A hidden arrival: no EXISTS, no RECENT, through NOOP or CHECK.
    await ok(other, "UNSELECT");
    const watcher = await human(mailbox);
    await ok(watcher, "EXAMINE INBOX");
    await append(other, "INBOX", rawMessage("spam@evil.test", "Hidden arrival", `h-${mailbox.token}`));
    expect(untagged(await agent.command("h1", "NOOP"))).toEqual([]);
    await append(other, "INBOX", rawMessage("boss@corp.test", "Hidden arrival 2", `h2-${mailbox.token}`));
    expect(untagged(await agent.command("h2", "CHECK"))).toEqual([]);
    // A session that EXAMINEs INBOX as the agent's upstream session does is told of both: RECENT and EXISTS.
    const told = untagged(await ok(watcher, "NOOP"));
    expect(told.filter((l) => / (EXISTS|RECENT)$/.test(l))).toHaveLength(2);

    // A visible arrival between two hidden ones: EXISTS and RECENT counted over the view.
    await append(other, "INBOX", rawMessage("notifications@shop.test", "Visible arrival", `v-${mailbox.token}`));
    await append(other, "INBOX", rawMessage("spam@evil.test", "Hidden arrival 3", `h3-${mailbox.token}`));
    const arrival = untagged(await agent.command("v", "CHECK"));
    expect(arrival).toEqual([`* ${e.visible.length + 1} EXISTS`, `* ${recent + 1} RECENT`]);
    const view = await agent.command("f", "FETCH 1:* (UID)");
    expect(view.match(/^\* \d+ FETCH/gm)?.length).toBe(e.visible.length + 1);
    expect(view).not.toContain(`h-${mailbox.token}`);
    agent.close();
    other.close();
    watcher.close();
  });
});

describe("other sessions' flag changes reach the agent during any command that reports them (RFC 3501 §7.4.2)", () => {
  /** Commands during which Dovecot reports another session's flag change, each run once after one change. */
  const COMMANDS = [
    "UID SEARCH ALL",
    "SEARCH ALL",
    "UID SORT (ARRIVAL) UTF-8 ALL",
    "UID THREAD REFERENCES UTF-8 ALL",
    "FETCH 1 (UID)",
    "STATUS INBOX (MESSAGES)",
    "EXPUNGE",
  ];

  /** For each command: the FETCH lines of its reply, after another session flagged message `i + 1` before it. */
  async function transcript(via: Target): Promise<string[][]> {
    const mailbox = await createMailbox({ name: `flags-${via}` });
    const other = await human(mailbox);
    for (let i = 1; i <= COMMANDS.length; i++)
      await append(other, "INBOX", rawMessage("a@b.test", `Message ${i}`, `m${i}`));
    await ok(other, "SELECT INBOX");
    const agent = await RawImap.login(portOf(via, allowAll), mailbox);
    expect(statusOf(await agent.command("s", "SELECT INBOX"), "s")).toStartWith("s OK");
    const out: string[][] = [];
    for (const [i, command] of COMMANDS.entries()) {
      await ok(other, `STORE ${i + 1} +FLAGS.SILENT (\\Flagged $Step${i})`);
      const reply = await agent.command("c", command);
      expect(`${command} → ${statusOf(reply, "c")}`).toStartWith(`${command} → c OK`);
      out.push(untagged(reply).filter((l) => l.includes(" FETCH ")));
    }
    agent.close();
    other.close();
    return out;
  }

  test("allow-all: the same FETCH lines as directly, one per change", async () => {
    const [direct, proxy] = await Promise.all([transcript("direct"), transcript("proxy")]);
    expect(proxy).toEqual(direct);
    // FETCH 1 (UID) answers for message 1 besides the change of message 5.
    const changes = proxy.flat().filter((l) => l.includes("$Step"));
    expect(changes).toHaveLength(COMMANDS.length);
    for (const [i] of COMMANDS.entries()) expect(changes[i]).toContain(`$Step${i}`);
  });

  test("filtered: a visible message's change, renumbered, during each command; a hidden one's, never", async () => {
    const mailbox = await createMailbox({ seed: { folders: { INBOX: 40 }, seed: 37 } });
    const e = expected(mailbox.manifest.folders["INBOX"]!);
    expect(e.visible.length).toBeGreaterThan(COMMANDS.length);
    expect(e.hidden.length).toBeGreaterThan(COMMANDS.length);
    const agent = await RawImap.login(filtered.port, mailbox);
    expect(statusOf(await agent.command("s", "EXAMINE INBOX"), "s")).toStartWith("s OK");
    const other = await human(mailbox);
    await ok(other, "SELECT INBOX");
    // EXPUNGE needs a read-write folder (EXAMINE refuses it); a filtered folder's STATUS is counted without a
    // command on the agent's upstream session (docs/filtering.md), so a change waits for the next one (NOOP).
    for (const [i, command] of [...COMMANDS.filter((c) => c !== "EXPUNGE"), "NOOP"].entries()) {
      await ok(other, `UID STORE ${e.hidden[i]!.uid} +FLAGS.SILENT ($Hidden${i})`);
      await ok(other, `UID STORE ${e.visibleUids[i + 1]!} +FLAGS.SILENT ($Step${i})`);
      const reply = await agent.command("c", command);
      expect(`${command} → ${statusOf(reply, "c")}`).toStartWith(`${command} → c OK`);
      // A hidden message's keyword is nowhere, nor in a FLAGS update (docs/protocol.md §3, "Keywords of a
      // filtered folder"); the changes are the FETCH lines.
      expect(reply).not.toContain("$Hidden");
      const changes = untagged(reply).filter((l) => l.includes(" FETCH ") && l.includes("$Step"));
      if (command.startsWith("STATUS")) {
        expect(changes).toEqual([]);
        continue;
      }
      // STATUS's change, reported now, before NOOP's own.
      if (command === "NOOP")
        expect(changes.shift()).toMatch(new RegExp(`^\\* ${i + 1} FETCH \\(FLAGS \\([^)]*\\$Step${i - 1}[^)]*\\)\\)$`));
      expect(changes).toHaveLength(1);
      expect(changes[0]).toMatch(new RegExp(`^\\* ${i + 2} FETCH \\(FLAGS \\([^)]*\\$Step${i}[^)]*\\)\\)$`));
    }
    agent.close();
    other.close();
  });
  test("a new keyword: FLAGS before the first FETCH that shows it, through STATUS, APPEND and IDLE", async () => {
    // RFC 3501 §7.2.6: a client learns the folder's keywords from FLAGS; a FETCH with one it was not told of is an
    // error to it (imaptest's stress mix found one through the proxy).
    async function transcript(via: Target): Promise<string[][]> {
      const mailbox = await createMailbox({ name: `keywords-${via}` });
      const other = await human(mailbox);
      for (let i = 1; i <= 3; i++) await append(other, "INBOX", rawMessage("a@b.test", `Message ${i}`, `m${i}`));
      await ok(other, "SELECT INBOX");
      const agent = await RawImap.login(portOf(via, allowAll), mailbox);
      expect(statusOf(await agent.command("s", "SELECT INBOX"), "s")).toStartWith("s OK");
      const out: string[][] = [];
      const lines = (reply: string, i: number) => untagged(reply).filter((l) => l.includes(`$New${i}`));
      await ok(other, "STORE 1 +FLAGS.SILENT ($New0)");
      out.push(lines(await agent.command("c", "STATUS INBOX (MESSAGES)"), 0));
      await ok(other, "STORE 2 +FLAGS.SILENT ($New1)");
      const message = rawMessage("a@b.test", "Appended", "m4");
      out.push(lines(await agent.command("a", `APPEND INBOX {${Buffer.byteLength(message)}+}\r\n${message}`), 1));
      agent.write("i IDLE\r\n");
      await agent.readUntil((b) => b.includes("+ "));
      await ok(other, "STORE 3 +FLAGS.SILENT ($New2)");
      await ok(other, "NOOP");
      await agent.readUntil((b) => /FETCH[^\r]*\$New2/.test(b));
      agent.write("DONE\r\n");
      out.push(lines(await agent.waitTagged("i"), 2));
      agent.close();
      other.close();
      return out;
    }
    const [direct, proxy] = await Promise.all([transcript("direct"), transcript("proxy")]);
    for (const [i, step] of proxy.entries()) {
      const fetch = step.findIndex((l) => l.includes(" FETCH "));
      const flags = step.findIndex((l) => l.startsWith("* FLAGS "));
      if (fetch === -1) continue;
      expect(`${i}: FLAGS at ${flags}, FETCH at ${fetch}`).toBe(
        `${i}: FLAGS at ${Math.min(flags, fetch - 1)}, FETCH at ${fetch}`,
      );
      expect(flags).toBeGreaterThanOrEqual(0);
    }
    // Directly, Dovecot reports each: the same FLAGS and FETCH lines, in the same order.
    expect(proxy).toEqual(direct);
  });

  test("mail:flag without mail:read: STORE sets the flag and answers with no FETCH, its own or another's", async () => {
    const mailbox = await createMailbox({ name: "flags-flag-noread" });
    const other = await human(mailbox);
    for (let i = 1; i <= 2; i++) await append(other, "INBOX", rawMessage("a@b.test", `Message ${i}`, `m${i}`));
    await ok(other, "SELECT INBOX");
    await ok(other, "STORE 1 +FLAGS.SILENT ($Old)");
    const agent = await RawImap.login(flagNoRead.port, mailbox);
    expect(statusOf(await agent.command("s", "SELECT INBOX"), "s")).toStartWith("s OK");
    expect(statusOf(await agent.command("f", "FETCH 1 (FLAGS)"), "f")).toStartWith("f NO");
    await ok(other, "STORE 2 +FLAGS.SILENT ($Secret2)");
    expect(await agent.command("t", "STORE 1 +FLAGS (\\Flagged)")).toBe("t OK Store completed\r\n");
    // It was stored: the owner sees it.
    expect(await other.command("g", "FETCH 1 (FLAGS)")).toMatch(/\* 1 FETCH \(FLAGS \([^)]*\\Flagged/);
    agent.close();
    other.close();
  });

  test("without mail:read in the folder: no flag change reaches the agent, through NOOP, APPEND or IDLE", async () => {
    const mailbox = await createMailbox({ name: "flags-noread" });
    const other = await human(mailbox);
    for (let i = 1; i <= 3; i++) await append(other, "INBOX", rawMessage("a@b.test", `Message ${i}`, `m${i}`));
    await ok(other, "SELECT INBOX");
    const agent = await RawImap.login(noRead.port, mailbox);
    expect(statusOf(await agent.command("s", "SELECT INBOX"), "s")).toStartWith("s OK");
    // The rules are as meant: reading the flags is refused.
    expect(statusOf(await agent.command("f", "FETCH 1 (FLAGS)"), "f")).toStartWith("f NO");
    await ok(other, "STORE 1 +FLAGS.SILENT ($Secret1)");
    const noop = await agent.command("n", "NOOP");
    await ok(other, "STORE 2 +FLAGS.SILENT ($Secret2)");
    const message = rawMessage("a@b.test", "Appended", "m4");
    const appended = await agent.command("a", `APPEND INBOX {${Buffer.byteLength(message)}+}\r\n${message}`);
    expect(statusOf(appended, "a")).toStartWith("a OK");
    agent.write("i IDLE\r\n");
    await agent.readUntil((b) => b.includes("+ "));
    await ok(other, "STORE 3 +FLAGS.SILENT ($Secret3)");
    await ok(other, "NOOP");
    await Bun.sleep(1500);
    agent.write("DONE\r\n");
    const idled = await agent.waitTagged("i");
    for (const reply of [noop, appended, idled]) expect(reply).not.toMatch(/FETCH|\$Secret/);
    // Nor the keywords, which are the messages' data too: FLAGS and PERMANENTFLAGS list the system flags.
    const again = await agent.command("s2", "SELECT INBOX");
    expect(statusOf(again, "s2")).toStartWith("s2 OK");
    expect(again).toContain("* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n");
    expect(again).not.toContain("$Secret");
    // Directly, the same session would have heard of each (the change is there to be told of).
    const direct = await RawImap.login(upstreams().ports.imap, mailbox);
    await direct.command("s", "SELECT INBOX");
    expect(await direct.command("f", "FETCH 1:3 (FLAGS)")).toContain("$Secret3");
    agent.close();
    other.close();
    direct.close();
  });
});

describe("LIST and LSUB show \\Noselect parents of visible folders (RFC 3501 §6.3.8, §6.3.9)", () => {
  for (const target of TARGETS) {
    test(`${target}: only a/b/c/d: LIST "" a/% is a/b (\\Noselect \\HasChildren), LSUB a/b (\\Noselect)`, async () => {
      const mailbox = await createMailbox({ name: `conf-list-${target}` });
      const other = await human(mailbox);
      expect(statusOf(await other.command("c", "CREATE a/b/c/d"), "c")).toStartWith("c OK");
      expect(statusOf(await other.command("s", "SUBSCRIBE a/b/c/d"), "s")).toStartWith("s OK");
      const agent = await RawImap.login(portOf(target, allowAll), mailbox);
      expect(listed(await agent.command("l1", 'LIST "" a/%'))).toEqual(["a/b (\\HASCHILDREN \\NOSELECT)"]);
      expect(listed(await agent.command("l2", 'LIST "" a/%/%'))).toEqual(["a/b/c (\\HASCHILDREN \\NOSELECT)"]);
      expect(listed(await agent.command("l3", 'LIST "" a/*'))).toEqual([
        "a/b (\\HASCHILDREN \\NOSELECT)",
        "a/b/c (\\HASCHILDREN \\NOSELECT)",
        "a/b/c/d (\\HASNOCHILDREN)",
      ]);
      expect(listed(await agent.command("l4", 'LIST "" %'))).toContain("a (\\HASCHILDREN \\NOSELECT)");
      // §6.3.9: foo/bar subscribed, foo not: LSUB "" % returns foo flagged \Noselect.
      expect(listed(await agent.command("s1", 'LSUB "" a/%'), "LSUB")).toEqual(["a/b (\\NOSELECT)"]);
      expect(listed(await agent.command("s2", 'LSUB "" %'), "LSUB")).toContain("a (\\NOSELECT)");
      expect(listed(await agent.command("s3", 'LSUB "" a/*'), "LSUB")).toEqual(["a/b/c/d ()"]);
      agent.close();
      other.close();
    });
  }

  test("a parent whose only children are hidden is not shown; one with a visible child is", async () => {
    const mailbox = await createMailbox();
    const other = await human(mailbox);
    for (const name of ["p/q/secret", "m/n/secret", "m/visible/leaf"]) {
      expect(statusOf(await other.command("c", `CREATE ${name}`), "c")).toStartWith("c OK");
      expect(statusOf(await other.command("s", `SUBSCRIBE ${name}`), "s")).toStartWith("s OK");
    }
    // Directly, Dovecot lists the parents of the hidden folders: the proxy must not.
    expect(listed(await other.command("d", 'LIST "" p/%'))).toEqual(["p/q (\\HASCHILDREN \\NOSELECT)"]);
    const agent = await RawImap.login(hideSecret.port, mailbox);
    const top = listed(await agent.command("l1", 'LIST "" %'));
    expect(top).toContain("m (\\HASCHILDREN \\NOSELECT)");
    expect(top.filter((l) => l.startsWith("p "))).toEqual([]);
    expect(listed(await agent.command("l2", 'LIST "" p/%'))).toEqual([]);
    expect(listed(await agent.command("l3", 'LIST "" p/*'))).toEqual([]);
    expect(listed(await agent.command("l4", 'LIST "" m/%'))).toEqual(["m/visible (\\HASCHILDREN \\NOSELECT)"]);
    expect(listed(await agent.command("l5", 'LIST "" m/*'))).toEqual([
      "m/visible (\\HASCHILDREN \\NOSELECT)",
      "m/visible/leaf (\\HASNOCHILDREN)",
    ]);
    const lsubTop = listed(await agent.command("s1", 'LSUB "" %'), "LSUB");
    expect(lsubTop).toContain("m (\\NOSELECT)");
    expect(lsubTop.filter((l) => l.startsWith("p "))).toEqual([]);
    expect(listed(await agent.command("s2", 'LSUB "" p/%'), "LSUB")).toEqual([]);
    expect(listed(await agent.command("s3", 'LSUB "" m/%'), "LSUB")).toEqual(["m/visible (\\NOSELECT)"]);
    agent.close();
    other.close();
  });
});

describe("a mailbox name that is not valid modified UTF-7 is answered NO, as Dovecot does (RFC 3501 §5.1.3)", () => {
  /**
   * Every atom character (`&'` starts a broken base64 run), a broken run, a non-canonical INBOX, and a printable
   * character in base64 (RFC 3501 §5.1.3: printable ASCII stands for itself).
   */
  const NAMES = ["!#$&'+,-.0123456789:;<=>?@^_`|[}", '"bad&Jjo"', '"&AEk-NBOX"', '"a&AGE"'];
  /** In a selected INBOX; a failed EXAMINE or SELECT deselects, which the FETCH after each shows. */
  const COMMANDS = (name: string) => [
    "SELECT INBOX",
    `COPY 1 ${name}`,
    `UID MOVE 1 ${name}`,
    `STATUS ${name} (MESSAGES)`,
    `CREATE ${name}`,
    `DELETE ${name}`,
    `RENAME ${name} Elsewhere`,
    `RENAME Drafts ${name}`,
    `RENAME INBOX ${name}`,
    `SUBSCRIBE ${name}`,
    `UNSUBSCRIBE ${name}`,
    `APPEND ${name} {5+}\r\nhello`,
    `LIST "" ${name}`,
    `LSUB "" ${name}`,
    `EXAMINE ${name}`,
    "FETCH 1 (UID)",
    "SELECT INBOX",
    `SELECT ${name}`,
    "FETCH 1 (UID)",
  ];

  async function transcript(via: Target): Promise<string[]> {
    const mailbox = await createMailbox({ name: `fix-mutf7-${via}` });
    const other = await human(mailbox);
    await append(other, "INBOX", rawMessage("a@b.test", "Message", "m1"));
    other.close();
    const agent = await RawImap.login(portOf(via, allowAll), mailbox);
    const out: string[] = [];
    for (const name of NAMES) {
      for (const [i, command] of COMMANDS(name).entries()) {
        const reply = await agent.command(`c${i}`, command);
        // The status and how much data came, not the texts, which are the server's own; nor Dovecot's `[CLOSED]`
        // (RFC 7162 §3.2.11), a QRESYNC code that the proxy does not offer and never relays.
        const data = untagged(reply).filter((l) => !l.startsWith("* OK [CLOSED]"));
        out.push(`${command} → ${statusOf(reply, `c${i}`).split(" ")[1]} ${data.length}`);
      }
    }
    agent.close();
    return out;
  }

  test("NO for every command; LIST and LSUB list nothing; SELECT deselects; the same as directly", async () => {
    const [direct, proxy] = await Promise.all([transcript("direct"), transcript("proxy")]);
    expect(proxy).toEqual(direct);
    expect(proxy).toHaveLength(NAMES.length * COMMANDS("").length);
    for (const line of proxy) {
      if (line.startsWith("SELECT INBOX")) expect(line).toMatch(/→ OK [1-9]\d*$/);
      else if (line.startsWith("LIST") || line.startsWith("LSUB")) expect(line).toEndWith("→ OK 0");
      else if (line.startsWith("FETCH")) expect(line).toEndWith("→ BAD 0");
      else expect(line).toEndWith("→ NO 0");
    }
  });

  test("audited as refused; before login the same name is BAD, and the session carries on", async () => {
    const mailbox = await createMailbox();
    const raw = await RawImap.open(allowAll.port);
    expect(statusOf(await raw.command("a", 'SELECT "bad&Jjo"'), "a")).toStartWith("a BAD");
    expect(statusOf(await raw.command("L", `LOGIN "${mailbox.user}" "${mailbox.password}"`), "L")).toStartWith("L OK");
    expect(statusOf(await raw.command("b", 'STATUS "bad&Jjo" (MESSAGES)'), "b")).toBe(
      "b NO [CANNOT] Invalid mailbox name",
    );
    expect(statusOf(await raw.command("c", "NOOP"), "c")).toStartWith("c OK");
    raw.close();
    const rows = (await allowAll.rows()).filter((r) => r.command === "STATUS" && r.decision === "deny");
    expect(rows.some((r) => r.reason.startsWith("invalid mailbox name: "))).toBe(true);
  });
});

describe("CREATE with a trailing hierarchy delimiter (RFC 3501 §6.3.3)", () => {
  async function transcript(via: Target): Promise<string[]> {
    const mailbox = await createMailbox({ name: `fix-create-${via}` });
    const agent = await RawImap.login(portOf(via, allowAll), mailbox);
    const out: string[] = [];
    for (const command of ["CREATE x/", "CREATE x/y/", 'CREATE "x/y/z/"', "CREATE x/y/", "CREATE x//", 'LIST "" x*']) {
      const reply = await agent.command("c", command);
      out.push(`${command} → ${statusOf(reply, "c").split(" ")[1]}`, ...untagged(reply));
    }
    expect(statusOf(await agent.command("s", "SELECT x/y"), "s")).toStartWith("s OK");
    agent.close();
    return out;
  }

  test("CREATE x/ and x/y/ create x and x/y; again is NO; the same as directly", async () => {
    const [direct, proxy] = await Promise.all([transcript("direct"), transcript("proxy")]);
    expect(proxy).toEqual(direct);
    expect(proxy).toEqual([
      "CREATE x/ → OK",
      "CREATE x/y/ → OK",
      'CREATE "x/y/z/" → OK',
      "CREATE x/y/ → NO",
      "CREATE x// → NO",
      'LIST "" x* → OK',
      '* LIST (\\HasChildren) "/" x',
      '* LIST (\\HasChildren) "/" x/y',
      '* LIST (\\HasNoChildren) "/" x/y/z',
    ]);
  });

  test("a trailing delimiter does not get around a hidden folder, and creates nothing upstream", async () => {
    const mailbox = await createMailbox();
    const agent = await RawImap.login(hideSecret.port, mailbox);
    const plain = statusOf(await agent.command("c1", "CREATE secret"), "c1");
    expect(plain).toStartWith("c1 NO [NOPERM]");
    expect(statusOf(await agent.command("c2", "CREATE secret/"), "c2").slice(3)).toBe(plain.slice(3));
    expect(statusOf(await agent.command("c3", "CREATE secret/x/"), "c3").slice(3)).toBe(plain.slice(3));
    expect(statusOf(await agent.command("c4", "CREATE a/secret/"), "c4").slice(3)).toBe(plain.slice(3));
    expect(statusOf(await agent.command("c5", "CREATE shown/"), "c5")).toStartWith("c5 OK");
    agent.close();
    const other = await human(mailbox);
    const names = untagged(await other.command("l", 'LIST "" *')).map((l) => l.slice(l.lastIndexOf(" ") + 1));
    expect(names).toContain("shown");
    expect(names.filter((n) => n.includes("secret"))).toEqual([]);
    other.close();
  });
});
