/**
 * Transparency to the letter (docs/conformance.md): what Dovecot answers directly, Mailgator in pass-through with
 * allow-all rules answers too, and in a filtered folder the same answers restricted to the agent's view.
 *
 * - NOOP and CHECK relay another session's flag changes (`* n FETCH (FLAGS ...)`, RFC 3501 §6.1.2, §6.4.1, §7.4.2)
 *   and `* n RECENT` with EXISTS (§7.3.2); in a filtered folder only for visible messages, renumbered.
 * - LIST shows a parent that does not exist but has a visible child as `\Noselect` (RFC 3501 §6.3.8, and LSUB
 *   §6.3.9 for `%`); a parent whose only children are hidden stays nonexistent.
 * - A mailbox name that is not valid modified UTF-7 (RFC 3501 §5.1.3) is answered `NO`, not `BAD`, as Dovecot does.
 * - `CREATE a/b/` (a trailing hierarchy delimiter, RFC 3501 §6.3.3) creates `a/b`.
 *
 * Every scenario runs twice, against Dovecot directly and through the proxy, each with a fresh user, and the direct
 * answers are checked against the same expectations, so the test proves what the real server does.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createMailbox, type TestMailbox, upstreams } from "../fixtures/index.ts";
import { expected, rawMessage, SEED_RULES } from "./filtered-fixture.ts";
import { RawImap, startTestProxy, statusOf, type TestProxy } from "./helpers.ts";

/** Hides every folder named `secret` and everything below one; the rest is allowed. */
const HIDE_SECRET = `[[rules]]
name = "secret folders"
folders = ["**/secret", "**/secret/**"]
action = "deny"

[[rules]]
name = "everything else"
action = "allow"
`;

let allowAll: TestProxy;
let hideSecret: TestProxy;
let filtered: TestProxy;

beforeAll(async () => {
  [allowAll, hideSecret, filtered] = await Promise.all([
    startTestProxy({ upstreamTls: "none" }),
    startTestProxy({ upstreamTls: "none", rules: HIDE_SECRET }),
    startTestProxy({ upstreamTls: "none", rules: SEED_RULES }),
  ]);
});

afterAll(async () => {
  await Promise.all([allowAll?.close(), hideSecret?.close(), filtered?.close()]);
});

type Target = "direct" | "proxy";
const TARGETS: readonly Target[] = ["direct", "proxy"];

/** A logged-in raw client: to Dovecot's plain port, or to the proxy. */
async function login(mailbox: TestMailbox, port: number): Promise<RawImap> {
  const raw = await RawImap.open(port);
  expect(statusOf(await raw.command("L", `LOGIN "${mailbox.user}" "${mailbox.password}"`), "L")).toStartWith("L OK");
  return raw;
}

function portOf(target: Target, proxy: TestProxy): number {
  return target === "direct" ? upstreams().ports.imap : proxy.port;
}

/** Another client straight at Dovecot (the human's mail app). */
function human(mailbox: TestMailbox): Promise<RawImap> {
  return login(mailbox, upstreams().ports.imap);
}

/** APPEND with a non-synchronizing literal (Dovecot offers LITERAL+). */
async function append(raw: RawImap, folder: string, message: string): Promise<void> {
  const reply = await raw.command("A", `APPEND ${folder} {${Buffer.byteLength(message)}+}\r\n${message}`);
  expect(statusOf(reply, "A")).toStartWith("A OK");
}

/** The untagged lines of a reply, without the tagged status line. */
function untagged(reply: string): string[] {
  return reply.split("\r\n").filter((l) => l.startsWith("* "));
}

/** `* n FETCH (... FLAGS (...) ...)` as seq → flags (upper-cased), in order. */
function fetchedFlags(reply: string): Array<[number, string[]]> {
  const out: Array<[number, string[]]> = [];
  for (const m of reply.matchAll(/^\* (\d+) FETCH \([^\r\n]*?FLAGS \(([^)]*)\)/gm)) {
    out.push([
      Number(m[1]),
      m[2]!
        .split(" ")
        .filter(Boolean)
        .map((f) => f.toUpperCase()),
    ]);
  }
  return out;
}

function recentOf(reply: string): number | null {
  const m = /^\* (\d+) RECENT\r$/m.exec(reply);
  return m === null ? null : Number(m[1]);
}

function existsOf(reply: string): number | null {
  const m = /^\* (\d+) EXISTS\r$/m.exec(reply);
  return m === null ? null : Number(m[1]);
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

describe("NOOP and CHECK relay other sessions' changes (RFC 3501 §6.1.2, §6.4.1, §7.3.2, §7.4.2)", () => {
  for (const verb of ["NOOP", "CHECK"] as const) {
    for (const target of TARGETS) {
      test(`${verb}, ${target}: another session's \\Seen as FETCH FLAGS, an arrival as EXISTS, RECENT`, async () => {
        const mailbox = await createMailbox({ name: `conf-${verb}-${target}` });
        const other = await human(mailbox);
        for (let i = 1; i <= 3; i++) await append(other, "INBOX", rawMessage("a@b.test", `Message ${i}`, `m${i}`));
        const agent = await login(mailbox, portOf(target, allowAll));
        const selected = await agent.command("s", "SELECT INBOX");
        expect(existsOf(selected)).toBe(3);
        const recent = recentOf(selected);
        expect(recent).toBe(3);

        expect(statusOf(await other.command("o", "SELECT INBOX"), "o")).toStartWith("o OK");
        expect(statusOf(await other.command("f", "STORE 2 +FLAGS.SILENT (\\Seen)"), "f")).toStartWith("f OK");
        const first = await agent.command("n", verb);
        expect(statusOf(first, "n")).toStartWith("n OK");
        expect(fetchedFlags(first).map(([seq]) => seq)).toEqual([2]);
        expect(fetchedFlags(first)[0]![1]).toContain("\\SEEN");

        // A message the other session appends while it has INBOX selected is \Recent in that session (RFC 3501
        // §2.3.2: one session only); let it leave first so the new message is the agent's to report as recent.
        expect(statusOf(await other.command("u", "UNSELECT"), "u")).toStartWith("u OK");
        await append(other, "INBOX", rawMessage("a@b.test", "Message 4", "m4"));
        const second = await agent.command("m", verb);
        expect(statusOf(second, "m")).toStartWith("m OK");
        expect(existsOf(second)).toBe(4);
        expect(recentOf(second)).toBe(recent! + 1);
        agent.close();
        other.close();
      });
    }
  }

  test("filtered: visible flag changes and arrivals only, renumbered; RECENT over the view", async () => {
    const mailbox = await createMailbox({ seed: { folders: { INBOX: 40 }, seed: 31 } });
    const e = expected(mailbox.manifest.folders["INBOX"]!);
    expect(e.visible.length).toBeGreaterThan(4);
    expect(e.hidden.length).toBeGreaterThan(4);
    const agent = await login(mailbox, filtered.port);
    const selected = await agent.command("s", "EXAMINE INBOX");
    expect(existsOf(selected)).toBe(e.visible.length);
    const recent = recentOf(selected)!;
    expect(recent).toBeGreaterThanOrEqual(0);

    const other = await human(mailbox);
    expect(statusOf(await other.command("o", "SELECT INBOX"), "o")).toStartWith("o OK");
    // A change of flags is reported only when the flags change: pick messages without \Flagged.
    const visibleIndex = e.visible.findIndex((m, i) => i >= 2 && !m.flags.includes("\\Flagged"));
    const visibleUid = e.visible[visibleIndex]!.uid;
    const hiddenUid = e.hidden.find((m) => !m.flags.includes("\\Flagged"))!.uid;
    for (const uid of [hiddenUid, visibleUid]) {
      expect(statusOf(await other.command("f", `UID STORE ${uid} +FLAGS.SILENT (\\Flagged)`), "f")).toStartWith("f OK");
    }
    const noop = await agent.command("n", "NOOP");
    expect(statusOf(noop, "n")).toStartWith("n OK");
    // The visible message's number is its place among the visible ones; the hidden one is never mentioned.
    expect(fetchedFlags(noop).map(([seq]) => seq)).toEqual([visibleIndex + 1]);
    expect(fetchedFlags(noop)[0]![1]).toContain("\\FLAGGED");

    expect(statusOf(await other.command("u", "UNSELECT"), "u")).toStartWith("u OK");
    await append(other, "INBOX", rawMessage("spam@evil.test", "Hidden arrival", `h-${mailbox.token}`));
    await append(other, "INBOX", rawMessage("notifications@shop.test", "Visible arrival", `v-${mailbox.token}`));
    await append(other, "INBOX", rawMessage("boss@corp.test", "Hidden arrival 2", `h2-${mailbox.token}`));
    const check = await agent.command("c", "CHECK");
    expect(statusOf(check, "c")).toStartWith("c OK");
    expect(untagged(check).filter((l) => / EXISTS$/.test(l))).toEqual([`* ${e.visible.length + 1} EXISTS`]);
    expect(untagged(check).filter((l) => / RECENT$/.test(l))).toEqual([`* ${recent + 1} RECENT`]);
    expect(check).not.toContain(`h-${mailbox.token}`);
    const view = await agent.command("v", "FETCH 1:* (UID)");
    expect(view.match(/^\* \d+ FETCH/gm)?.length).toBe(e.visible.length + 1);
    agent.close();
    other.close();
  });
});

describe("LIST and LSUB show \\Noselect parents of visible folders (RFC 3501 §6.3.8, §6.3.9)", () => {
  for (const target of TARGETS) {
    test(`${target}: only a/b/c/d: LIST "" a/% is a/b (\\Noselect \\HasChildren), LSUB a/b (\\Noselect)`, async () => {
      const mailbox = await createMailbox({ name: `conf-list-${target}` });
      const other = await human(mailbox);
      expect(statusOf(await other.command("c", "CREATE a/b/c/d"), "c")).toStartWith("c OK");
      expect(statusOf(await other.command("s", "SUBSCRIBE a/b/c/d"), "s")).toStartWith("s OK");
      const agent = await login(mailbox, portOf(target, allowAll));
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
    const agent = await login(mailbox, hideSecret.port);
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

describe("a mailbox name that is not valid modified UTF-7 is answered NO, not BAD (RFC 3501 §5.1.3)", () => {
  /** imaptest's atom test name (every atom character) and two broken base64 runs. */
  const NAMES = ["!#$&'+,-.0123456789:;<=>?@^_`|[}", '"bad&Jjo"', '"a&AGE"'];
  for (const target of TARGETS) {
    test(`${target}: SELECT, EXAMINE, STATUS, CREATE, DELETE, RENAME, SUBSCRIBE, APPEND: NO; LIST: empty`, async () => {
      const mailbox = await createMailbox({ name: `conf-mutf7-${target}` });
      const agent = await login(mailbox, portOf(target, allowAll));
      for (const name of NAMES) {
        for (const [i, command] of [
          `SELECT ${name}`,
          `EXAMINE ${name}`,
          `STATUS ${name} (MESSAGES)`,
          `CREATE ${name}`,
          `DELETE ${name}`,
          `RENAME ${name} Elsewhere`,
          `RENAME INBOX ${name}`,
          `SUBSCRIBE ${name}`,
          `APPEND ${name} {5+}\r\nhello`,
        ].entries()) {
          const reply = await agent.command(`c${i}`, command);
          expect(`${command} → ${statusOf(reply, `c${i}`)}`).toStartWith(`${command} → c${i} NO`);
        }
        const list = await agent.command("l", `LIST "" ${name}`);
        expect(list).toStartWith("l OK");
      }
      // The session is intact afterwards.
      expect(statusOf(await agent.command("n", "NOOP"), "n")).toStartWith("n OK");
      agent.close();
    });
  }
});

describe("CREATE with a trailing hierarchy delimiter (RFC 3501 §6.3.3)", () => {
  for (const target of TARGETS) {
    test(`${target}: CREATE x/ and CREATE x/y/ create x and x/y, which LIST shows`, async () => {
      const mailbox = await createMailbox({ name: `conf-create-${target}` });
      const agent = await login(mailbox, portOf(target, allowAll));
      expect(statusOf(await agent.command("c1", "CREATE x/"), "c1")).toStartWith("c1 OK");
      expect(statusOf(await agent.command("c2", "CREATE x/y/"), "c2")).toStartWith("c2 OK");
      expect(statusOf(await agent.command("c3", 'CREATE "x/y/z/"'), "c3")).toStartWith("c3 OK");
      const names = listed(await agent.command("l", 'LIST "" x*')).map((l) => l.split(" ")[0]);
      expect(names).toEqual(["x", "x/y", "x/y/z"]);
      // Creating it again is refused as an existing name is, and the folder is usable.
      expect(statusOf(await agent.command("c4", "CREATE x/y/"), "c4")).toStartWith("c4 NO");
      expect(statusOf(await agent.command("s", "SELECT x/y"), "s")).toStartWith("s OK");
      agent.close();
    });
  }

  test("a trailing delimiter does not get around a hidden folder", async () => {
    const mailbox = await createMailbox();
    const agent = await login(mailbox, hideSecret.port);
    const plain = statusOf(await agent.command("c1", "CREATE secret"), "c1");
    const trailing = statusOf(await agent.command("c2", "CREATE secret/"), "c2");
    expect(plain).toStartWith("c1 NO");
    expect(trailing.slice(3)).toBe(plain.slice(3));
    expect(statusOf(await agent.command("c3", "CREATE secret/x/"), "c3").slice(3)).toBe(plain.slice(3));
    agent.close();
  });
});
