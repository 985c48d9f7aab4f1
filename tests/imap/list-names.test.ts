/**
 * LIST patterns and references with punctuation (src/imap/folders.ts `listMatcher`, RFC 3501 §6.3.8): every
 * character but `*` and `%` is itself, whatever it means in a regular expression. A `-` in a pattern once made the
 * matcher throw (an escape the Unicode flag refuses) and LIST answer `NO [SERVERBUG]` without an audit row. Against
 * the real Dovecot the proxy's answers equal Dovecot's own; a command that fails inside the proxy has an `error` row.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { FolderNames } from "../../src/imap/folders.ts";
import { connectImap, createMailbox, type TestMailbox, upstreams } from "../fixtures/index.ts";
import { auditCursor, RawImap, startTestProxy, statusOf, type TestProxy } from "./helpers.ts";

/** Names with punctuation (Dovecot refuses `.` in a name with its `/` delimiter: tested without a server below). */
const NAMES = ["Sent-2024", "x+y", "(p)", "[q]", "{r}", "$", "^", "|", "\\", "a-b/c-d", "é-x", "x*y", "p%q", "?"];
/** Names a wrongly read pattern would also match. */
const DECOYS = ["Sent_2024", "Sentx", "xxy", "p", "q", "r", "Sent-", "a-b/cxd", "xy"];

describe("listMatcher: time bounded by pattern and name, answers as a regular expression's", () => {
  test("wildcards that made a regular expression backtrack exponentially answer at once", () => {
    const names = new FolderNames("/");
    // As a regular expression: 0.5 s for 40 `a`, 17 s for 60; the glob rows take pattern x name steps.
    const m = names.listMatcher("", `${"*a".repeat(40)}*b`);
    const started = performance.now();
    for (let i = 0; i < 100; i++) expect(m("a".repeat(60 + i))).toBe(false);
    expect(m(`${"a".repeat(60)}b`)).toBe(true);
    // Generous: 101 names in well under a second; the old matcher took years for these.
    expect(performance.now() - started).toBeLessThan(5000);
  });

  test("a long run of wildcards costs no more than one: 64 K of `%*` answer at once", () => {
    const names = new FolderNames("/");
    const m = names.listMatcher("%*".repeat(16 * 1024), `${"%*".repeat(16 * 1024)}q`);
    const started = performance.now();
    for (let i = 0; i < 20; i++) expect(m(`folder-${"x".repeat(1000)}-${i}`)).toBe(false);
    expect(m("q")).toBe(true);
    // Generous: 20 names of 1,000 characters in milliseconds; about half a second each when every wildcard was a row.
    expect(performance.now() - started).toBeLessThan(2000);
  });

  test("INBOX, and only INBOX, is case-insensitive (RFC 3501 §5.1)", () => {
    const m = (pattern: string, name: string) => new FolderNames("/").listMatcher("", pattern)(name);
    expect([m("inbox", "INBOX"), m("InBoX/*", "INBOX/Foo"), m("inbox/Foo", "INBOX/Foo")]).toEqual([true, true, true]);
    // Below INBOX, names keep their case, whatever the case folding of the characters.
    expect([m("inbox/foo", "INBOX/Foo"), m("inbox/s", "INBOX/ſ"), m("inbox/i%", "INBOX/İ")]).toEqual([
      false,
      false,
      false,
    ]);
    expect([m("inbox%", "INBOX2"), m("inbox%", "INBOX")]).toEqual([false, true]);
    // INBOX's own five characters match in either case wherever the pattern has them, as at Dovecot.
    expect([m("i*", "INBOX"), m("i*", "INBOX/Foo"), m("%nbox", "INBOX"), m("in%", "INBOX")]).toEqual([
      true,
      true,
      true,
      true,
    ]);
    expect([m("i*", "Inbox2"), m("ı*", "INBOX"), m("%/f*", "INBOX/Foo"), m("i%", "INBOX/Foo")]).toEqual([
      false,
      false,
      false,
      false,
    ]);
  });

  test("FolderNames.same: INBOX's level in any ASCII case, and only INBOX's", () => {
    const n = new FolderNames("/");
    expect([n.same("INBOX/Sub", "inbox/Sub"), n.same("iNbOx/a/b", "INBOX/a/b"), n.same("INBOX", "INBOX")]).toEqual([
      true,
      true,
      true,
    ]);
    expect([
      n.same("INBOX/Sub", "INBOX/sub"),
      n.same("&ATE-nbox/Sub", "INBOX/Sub"),
      n.same("ınbox/Sub", "INBOX/Sub"),
    ]).toEqual([false, false, false]);
    expect([n.same("Inboxes/a", "INBOXES/a"), new FolderNames(".").same("inbox/a", "INBOX/a")]).toEqual([false, false]);
  });

  test("FolderNames.within: the folder itself or one below it, INBOX's level in any ASCII case", () => {
    const n = new FolderNames("/");
    const yes = [
      ["a/b", "a"],
      ["a/b/c", "a"],
      ["a", "a"],
      ["INBOX/x/y", "inbox/x"],
      ["inbox/x", "INBOX"],
      ["INBOX/x", "iNbOx"],
    ];
    const no = [
      ["ab", "a"],
      ["a", "a/b"],
      ["A/b", "a"],
      ["ınbox/x", "INBOX"],
      ["INBOXES/x", "INBOX"],
      ["b/a", "a"],
    ];
    expect(yes.map(([name, folder]) => n.within(name!, folder!))).toEqual(yes.map(() => true));
    expect(no.map(([name, folder]) => n.within(name!, folder!))).toEqual(no.map(() => false));
    expect(new FolderNames(null).within("a/b", "a")).toBe(false);
  });

  test("random patterns over a small alphabet: the same answers as the regular expression of RFC 3501 §6.3.8", () => {
    let seed = 7;
    const rand = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    const pick = (alphabet: string, max: number) =>
      Array.from({ length: rand(max + 1) }, () => alphabet[rand(alphabet.length)]).join("");
    const names = new FolderNames("/");
    for (let i = 0; i < 3000; i++) {
      const pattern = pick("ab/*%", 6);
      const name = pick("ab/", 7);
      let re = "^";
      for (const ch of pattern) re += ch === "*" ? "[\\s\\S]*" : ch === "%" ? "[^/]*" : ch;
      const expected = new RegExp(`${re}$`).test(name);
      expect({ pattern, name, matched: names.listMatcher("", pattern)(name) }).toEqual({
        pattern,
        name,
        matched: expected,
      });
    }
  });
});

describe("listMatcher: a name character is itself", () => {
  const names = new FolderNames("/");
  const cases: [string, string, string[], string[]][] = [
    // reference, pattern, matched, not matched
    ["", "Sent-2024", ["Sent-2024"], ["Sent_2024", "Sent2024"]],
    ["", "Sent-*", ["Sent-2024", "Sent-", "Sent-a/b"], ["Sent", "Sentx2024"]],
    ["Sent-", "%", ["Sent-2024"], ["Sent-a/b", "Sent"]],
    ["", "a.b", ["a.b"], ["axb", "ab"]],
    ["", "x+y", ["x+y"], ["xxy", "xy"]],
    ["", "(p)", ["(p)"], ["p"]],
    ["", "[q]", ["[q]"], ["q"]],
    ["", "{r}", ["{r}"], ["r"]],
    ["", "a{2}", ["a{2}"], ["aa"]],
    ["", "$", ["$"], [""]],
    ["", "^", ["^"], [""]],
    ["", "|", ["|"], ["", "x"]],
    ["", "\\", ["\\"], ["", "x"]],
    ["", "?", ["?"], ["", "x"]],
    ["", "a/b-c", ["a/b-c"], ["a/bxc"]],
    ["", "é-*", ["é-x"], ["é", "e-x"]],
    ["", "x%y", ["x*y", "xy", "x-y"], ["x/y"]],
  ];
  for (const [reference, pattern, yes, no] of cases) {
    test(`reference ${JSON.stringify(reference)}, pattern ${JSON.stringify(pattern)}`, () => {
      const m = names.listMatcher(reference, pattern);
      for (const n of yes) expect({ n, matched: m(n) }).toEqual({ n, matched: true });
      for (const n of no) expect({ n, matched: m(n) }).toEqual({ n, matched: false });
    });
  }

  test("a delimiter that is special in a character class: `%` stops at it, and only at it", () => {
    for (const d of ["-", "]", "^", "\\", "."]) {
      const m = new FolderNames(d).listMatcher("", "a%");
      expect([m("ab"), m(`a${d}b`), m("a-b")]).toEqual([true, false, d !== "-"]);
    }
  });
});

describe("against Dovecot", () => {
  let proxy: TestProxy;
  let mailbox: TestMailbox;
  let agent: RawImap;
  let direct: RawImap;
  let newRows: ReturnType<typeof auditCursor>;

  beforeAll(async () => {
    mailbox = await createMailbox();
    const human = await connectImap(mailbox);
    for (const name of [...NAMES, ...DECOYS, "INBOX/Sub"]) await human.mailboxCreate(name);
    await human.logout();
    proxy = await startTestProxy();
    newRows = auditCursor(proxy);
    agent = await RawImap.login(proxy.port, mailbox);
    direct = await RawImap.open(upstreams().ports.imaps, { tls: true });
    expect(statusOf(await direct.command("l", `LOGIN "${mailbox.user}" "${mailbox.password}"`), "l")).toStartWith(
      "l OK",
    );
  });

  afterAll(async () => {
    agent?.close();
    direct?.close();
    await proxy?.close();
  });

  /** The names a LIST reply lists, sorted, whether written as an atom, a quoted string or a literal. */
  function listed(reply: string, tag: string): string[] {
    expect(statusOf(reply, tag)).toStartWith(`${tag} OK`);
    const names: string[] = [];
    const head = /\* LIST \([^)]*\) (?:"[^"]*"|NIL) /g;
    for (let m = head.exec(reply); m !== null; m = head.exec(reply)) {
      const rest = reply.slice(m.index + m[0].length);
      const literal = /^\{(\d+)\}\r\n/.exec(rest);
      if (literal !== null) names.push(rest.slice(literal[0].length, literal[0].length + Number(literal[1])));
      else if (rest.startsWith('"')) names.push(JSON.parse(/^"(?:[^"\\]|\\.)*"/.exec(rest)![0]));
      else names.push(rest.slice(0, rest.indexOf("\r\n")));
    }
    return names.sort();
  }

  const patterns: [string, string][] = [
    ["", "Sent-*"],
    ["", "Sent-2024"],
    ["Sent-", "*"],
    ["", "a-b/c-*"],
    ["a-b/", "%"],
    ["", "x+y"],
    ["", "(p)"],
    ["", "[q]"],
    ["", "{r}"],
    ["", "$"],
    ["", "^"],
    ["", "|"],
    ["", "\\\\"],
    ["", "?"],
    ["", "x*y"],
    ["", "&AOk--*"],
    ["", "*-*"],
    // INBOX's own characters in any case, and only those (RFC 3501 §5.1); INBOX/Sub was made for these.
    ["", "i*"],
    ["", "%nbox"],
    ["", "in%"],
    ["inbox/", "%"],
    ["", "inbox/S*"],
    ["", "INBOX/S*"],
  ];
  for (const [reference, pattern] of patterns) {
    test(`LIST "${reference}" "${pattern}" lists what Dovecot lists, with an allow row`, async () => {
      await newRows();
      const command = `LIST "${reference}" "${pattern}"`;
      const ours = listed(await agent.command("p", command), "p");
      expect(ours.length).toBeGreaterThan(0);
      expect(ours).toEqual(listed(await direct.command("d", command), "d"));
      const rows = await newRows();
      expect(rows.map((r) => [r.command, r.decision])).toEqual([["LIST", "allow"]]);
    });
  }

  test("`ınbox` (a dotless i, &ATE-nbox) is not INBOX, as at Dovecot: INBOX is case-insensitive in ASCII", async () => {
    // Unicode upper-casing makes `ınbox` INBOX; RFC 3501 §5.1's case-insensitivity of INBOX is ASCII's. Made at
    // Dovecot with raw commands (imapflow, too, takes `ınbox` for INBOX).
    const message = "From: a@b.test\r\nSubject: dotless\r\n\r\nnot INBOX\r\n";
    for (const command of [
      "CREATE &ATE-nbox",
      "CREATE &ATE-nbox/Sub",
      `APPEND &ATE-nbox {${message.length}+}\r\n${message}`,
    ])
      expect(statusOf(await direct.command("m", command), "m")).toStartWith("m OK");
    for (const command of ["EXAMINE &ATE-nbox", "STATUS &ATE-nbox (MESSAGES)", "STATUS &ATE-nbox/Sub (MESSAGES)"]) {
      const ours = await agent.command("p", command);
      const theirs = await direct.command("d", command);
      const lines = (reply: string) => reply.split("\r\n").filter((l) => /^\* (\d+ EXISTS|STATUS)/.test(l));
      expect([command, ...lines(ours)]).toEqual([command, ...lines(theirs)]);
    }
    expect(await agent.command("s", "STATUS &ATE-nbox (MESSAGES)")).toContain("(MESSAGES 1)");
    expect(await agent.command("s", "STATUS INBOX (MESSAGES)")).toContain("(MESSAGES 0)");
    expect(listed(await agent.command("p", 'LIST "" "&ATE-nbox*"'), "p")).toEqual(["&ATE-nbox", "&ATE-nbox/Sub"]);
    await agent.command("c", "CLOSE");
    await direct.command("c", "CLOSE");
  });

  /** What the proxy says when DELETE or RENAME closes the selected folder. */
  const CLOSED = "* OK [CLOSED] Mailbox closed: it is being renamed or deleted";

  test("`inbox/x` is `INBOX/x` as at Dovecot: DELETE of it selected deselects, a CATENATE URL names it", async () => {
    // Dovecot takes the INBOX level of a name in any ASCII case; the proxy sends the agent's spelling upstream, so it
    // must know both spellings for the selected folder. DELETE of the selected folder without UNSELECT first: Dovecot
    // ends the session ("Selected mailbox was deleted"), and the agent got `* BYE Upstream connection lost`.
    const message = "From: a@b.test\r\nSubject: below inbox\r\n\r\nbody\r\n";
    for (const command of [
      "CREATE INBOX/Gone",
      "CREATE INBOX/Kept",
      `APPEND INBOX/Kept {${message.length}+}\r\n${message}`,
    ])
      expect(statusOf(await direct.command("m", command), "m")).toStartWith("m OK");
    expect(statusOf(await agent.command("s", "SELECT INBOX/Gone"), "s")).toStartWith("s OK");
    // The agent is told that its selected folder is closed (RFC 9051 §7.1).
    expect(await agent.command("d", "DELETE inbox/Gone")).toStartWith(`${CLOSED}\r\nd OK`);
    expect(statusOf(await agent.command("n", "NOOP"), "n")).toStartWith("n OK");
    expect(listed(await agent.command("p", 'LIST "" "INBOX/Gone"'), "p")).toEqual([]);
    // RFC 4469 §5 URL of the selected folder with its INBOX level in another case: the selected folder's message.
    expect(statusOf(await agent.command("s", "SELECT INBOX/Kept"), "s")).toStartWith("s OK");
    const reply = await agent.command("a", 'APPEND INBOX/Kept CATENATE (URL "/inbox/Kept/;UID=1")');
    expect(statusOf(reply, "a")).toStartWith("a OK");
    expect(await agent.command("t", "STATUS inbox/Kept (MESSAGES)")).toContain("(MESSAGES 2)");
    await agent.command("c", "CLOSE");
  });

  test("RENAME of the selected folder, or of one above it, deselects it first, said with [CLOSED]", async () => {
    // Dovecot ends a session whose selected folder is renamed under it (the next FETCH: BYE "Mailbox was deleted under
    // us"); and the proxy's view and rules of the selected folder are the old name's.
    const message = "From: a@b.test\r\nSubject: renamed\r\n\r\nbody\r\n";
    for (const command of [
      "CREATE Ren1",
      `APPEND Ren1 {${message.length}+}\r\n${message}`,
      "CREATE RenP/Child",
      `APPEND RenP/Child {${message.length}+}\r\n${message}`,
      "CREATE INBOX/RenI",
      "CREATE RenTaken",
    ])
      expect(statusOf(await direct.command("m", command), "m")).toStartWith("m OK");
    for (const [select, rename, answer] of [
      ["Ren1", "RENAME Ren1 Ren2", "r OK"],
      ["RenP/Child", "RENAME RenP RenQ", "r OK"],
      ["INBOX/RenI", "RENAME inbox/RenI INBOX/RenJ", "r OK"],
      // Refused upstream: closed all the same, and the agent is told so.
      ["Ren2", "RENAME Ren2 RenTaken", "r NO [ALREADYEXISTS]"],
    ] as const) {
      expect(statusOf(await agent.command("s", `SELECT ${select}`), "s")).toStartWith("s OK");
      expect(await agent.command("r", rename)).toStartWith(`${CLOSED}\r\n${answer}`);
      expect(statusOf(await agent.command("f", "FETCH 1 (FLAGS)"), "f")).toBe("f BAD No mailbox selected");
      expect(statusOf(await agent.command("n", "NOOP"), "n")).toStartWith("n OK");
    }
    expect(await agent.command("t", "STATUS RenQ/Child (MESSAGES)")).toContain("(MESSAGES 1)");
  });

  test("a command that fails inside the proxy answers NO [SERVERBUG] and has an error row", async () => {
    const original = FolderNames.prototype.listMatcher;
    FolderNames.prototype.listMatcher = () => {
      throw new Error("matcher broke (test)");
    };
    try {
      await newRows();
      expect(await agent.command("x", 'LIST "" "*"')).toBe("x NO [SERVERBUG] Internal error\r\n");
    } finally {
      FolderNames.prototype.listMatcher = original;
    }
    const rows = await newRows();
    expect(rows.map((r) => [r.command, r.decision, r.reason])).toEqual([
      ["LIST", "error", "internal error: matcher broke (test)"],
    ]);
    expect(statusOf(await agent.command("y", 'LIST "" "Sent-*"'), "y")).toStartWith("y OK");
  });
});
