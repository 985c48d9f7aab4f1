/**
 * docs/protocol.md §7 cases 12–26 through the proxy, with a raw socket client writing exact bytes. After each attack
 * Dovecot is read directly (tests/fixtures connectImap): the reply alone proves nothing if the upstream changed.
 * Cases 1–11 are about hidden messages: filtered-attacks.test.ts and filtered-updates.test.ts.
 *
 * Rules: INBOX and below may be read, flagged and managed (no delete, move or append); Archive may be read and
 * expunged but not flagged (so it is opened read-write upstream and PEEK is the only thing keeping \Seen unset);
 * Sent is read-only; Drafts may be read, flagged and appended to; Trash is the agent's; Parent is the agent's but
 * its child Parent/Hidden is hidden; Secret and "[Gmail]/All Mail" are hidden (nothing allows them).
 */

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { connect, type Socket } from "node:net";
import { join } from "node:path";
import { connect as tlsConnect } from "node:tls";
import { MAX_ARGUMENT_LITERAL } from "../../src/imap/limits.ts";
import { connectImap, createMailbox, type TestMailbox, upstreams } from "../fixtures/index.ts";
import {
  auditCursor,
  RawImap,
  startTestProxy,
  statusOf,
  type TestProxy,
  type UpstreamState,
  upstreamState,
} from "./helpers.ts";

const RULES = `
[[rules]]
name = "hidden child"
folders = ["Parent/Hidden", "Parent/Hidden/**"]
action = "deny"

[[rules]]
name = "inbox"
folders = ["INBOX", "INBOX/**"]
action = "allow"
operations = ["read", "mail:flag", "folder:write"]

[[rules]]
name = "archive"
folders = ["Archive"]
action = "allow"
operations = ["read", "mail:delete"]

[[rules]]
name = "sent"
folders = ["Sent"]
action = "allow"
operations = ["read"]

[[rules]]
name = "drafts"
folders = ["Drafts"]
action = "allow"
operations = ["read", "mail:flag", "mail:append"]

[[rules]]
name = "agent's own"
folders = ["Trash", "Trash/**", "Parent", "Parent/*"]
action = "allow"

[[rules]]
name = "nothing else"
action = "deny"
`;

let proxy: TestProxy;
let mailbox: TestMailbox;
let newRows: ReturnType<typeof auditCursor>;

beforeAll(async () => {
  mailbox = await createMailbox({
    seed: {
      folders: { INBOX: 6, Archive: 4, Sent: 3, Drafts: 2, Trash: 2, Secret: 3, Parent: 1, "Parent/Hidden": 2 },
      seed: 23,
    },
  });
  const human = await connectImap(mailbox);
  await human.mailboxCreate("[Gmail]/All Mail");
  await human.append("[Gmail]/All Mail", "From: a@x.test\r\nSubject: all mail\r\n\r\nx\r\n");
  // Nothing unseen must turn seen by accident: start with every message unseen.
  for (const f of ["INBOX", "Archive", "Sent", "Drafts"]) {
    await human.mailboxOpen(f);
    await human.messageFlagsRemove("1:*", ["\\Seen"]);
  }
  await human.logout();
  proxy = await startTestProxy({ rules: RULES });
  newRows = auditCursor(proxy);
});

afterAll(async () => {
  await proxy?.close();
});

async function login(): Promise<RawImap> {
  return RawImap.login(proxy.port, mailbox);
}

/** Runs `attack` and checks that Dovecot holds exactly what it held before. */
async function unchanged(attack: () => Promise<void>): Promise<void> {
  const before = await upstreamState(mailbox);
  await attack();
  expect(await upstreamState(mailbox)).toEqual(before);
}

function seenCount(state: UpstreamState, folder: string): number {
  return state.messages[folder]!.uids.filter((u) => u.includes("\\Seen")).length;
}

/** Still a working session: a NOOP is answered. */
async function alive(raw: RawImap): Promise<void> {
  expect(statusOf(await raw.command("alive", "NOOP"), "alive")).toStartWith("alive OK");
}

test("§7.12 X-GM-LABELS in FETCH and X-GM-RAW in SEARCH get BAD", async () => {
  const raw = await login();
  await unchanged(async () => {
    await raw.command("s", "SELECT INBOX");
    expect(statusOf(await raw.command("a", "UID FETCH 1 (X-GM-LABELS)"), "a")).toStartWith("a BAD");
    expect(statusOf(await raw.command("b", 'SEARCH X-GM-RAW "in:anywhere"'), "b")).toStartWith("b BAD");
    expect(statusOf(await raw.command("c", "UID FETCH 1 (UID X-GM-MSGID X-GM-THRID)"), "c")).toStartWith("c BAD");
    await alive(raw);
  });
  raw.close();
});

describe("§7.13 mailbox names", () => {
  test('"[Gmail]/All Mail", "INBOX/../Secret", "#shared/x", "~user/INBOX", stray delimiters: none exist', async () => {
    const raw = await login();
    await newRows();
    await unchanged(async () => {
      const names = [
        '"[Gmail]/All Mail"',
        '"INBOX/../Secret"',
        "INBOX/..",
        "INBOX/./Secret",
        '"#shared/x"',
        "#shared",
        `"~${mailbox.user}/Secret"`,
        "Secret",
        "SECRET",
        "INBOX/",
        "Parent//Hidden",
        "Parent/Hidden/",
        "/Secret",
      ];
      for (const [i, name] of names.entries()) {
        for (const verb of ["SELECT", "EXAMINE"]) {
          const tag = `n${i}${verb[0]}`;
          expect(statusOf(await raw.command(tag, `${verb} ${name}`), tag)).toBe(
            `${tag} NO [NONEXISTENT] Mailbox does not exist`,
          );
        }
        const tag = `st${i}`;
        expect(statusOf(await raw.command(tag, `STATUS ${name} (MESSAGES)`), tag)).toBe(
          `${tag} NO [NONEXISTENT] Mailbox does not exist`,
        );
      }
      // A refused SELECT left nothing selected, on either side.
      expect(statusOf(await raw.command("f", "FETCH 1 FLAGS"), "f")).toStartWith("f BAD");
    });
    const rows = await newRows();
    expect(
      rows.filter((r) => r.decision === "deny" && (r.command === "SELECT" || r.command === "EXAMINE")).length,
    ).toBe(26);
    raw.close();
  });

  test('"InBoX" is INBOX; "&AEk-NBOX" (non-canonical modified UTF-7) gets NO, as from Dovecot', async () => {
    const raw = await login();
    const reply = await raw.command("a", "EXAMINE InBoX");
    expect(statusOf(reply, "a")).toStartWith("a OK [READ-ONLY]");
    expect(reply).toContain("* 6 EXISTS");
    expect(statusOf(await raw.command("b", 'SELECT "&AEk-NBOX"'), "b")).toBe("b NO [CANNOT] Invalid mailbox name");
    expect(statusOf(await raw.command("c", 'SELECT "inbox/../Secret"'), "c")).toStartWith("c NO [NONEXISTENT]");
    raw.close();
  });
});

test("§0.5 a hidden folder answers exactly as an absent one the agent could use", async () => {
  const raw = await login();
  await unchanged(async () => {
    // Trash/** is the agent's, so Trash/Nope is a name it may use that does not exist upstream.
    for (const verb of ["SELECT", "EXAMINE", "STATUS", "SUBSCRIBE", "DELETE", "RENAME", "APPEND", "COPY"]) {
      const args =
        verb === "STATUS" ? " (MESSAGES)" : verb === "RENAME" ? " Trash/Other" : verb === "APPEND" ? " {1+}\r\nx" : "";
      const replies: string[] = [];
      for (const name of ["Trash/Nope", "Secret", "Parent/Hidden"]) {
        if (verb === "COPY") await raw.command("s", "SELECT INBOX");
        replies.push(await raw.command("h", verb === "COPY" ? `COPY 1 ${name}` : `${verb} ${name}${args}`));
      }
      expect(replies[0]).toMatch(/^h NO \[(NONEXISTENT|TRYCREATE)\] Mailbox does not exist\r\n$/);
      expect(replies[1]).toBe(replies[0]!);
      expect(replies[2]).toBe(replies[0]!);
    }
  });
  raw.close();
});

test("§7.14 no listing reveals a hidden name, RECURSIVEMATCH and LIST-STATUS included", async () => {
  const raw = await login();
  const all: string[] = [];
  for (const [tag, cmd] of [
    ["a", 'LIST (RECURSIVEMATCH SUBSCRIBED) "" "%" RETURN (CHILDREN STATUS (MESSAGES))'],
    ["b", 'LIST (SUBSCRIBED) "" "*" RETURN (CHILDREN)'],
    ["c", 'LIST "" "%"'],
    ["d", 'LIST "" "*"'],
    ["e", 'LSUB "" "*"'],
    ["f", 'LIST "Parent/" "%"'],
    ["g", 'LIST "" "Parent/*"'],
    ["h", 'LIST "" "*Hidden*"'],
    ["i", 'LIST "" "#shared/*"'],
  ] as const) {
    const reply = await raw.command(tag, cmd);
    expect(statusOf(reply, tag)).toStartWith(`${tag} OK`);
    all.push(reply);
  }
  const text = all.join("");
  for (const hidden of ["Secret", "Hidden", "Gmail", "All Mail", "Junk", "#shared"]) expect(text).not.toContain(hidden);
  // Parent's only child is hidden: \HasNoChildren (RFC 3348 rewritten over visible folders).
  expect(text).toContain('* LIST (\\HasNoChildren) "/" Parent\r\n');
  // \Marked / \UnMarked would tell whether hidden mail arrived since the last SELECT: never passed on.
  expect(text.toLowerCase()).not.toContain("marked");
  raw.close();
});

test("§7.15 CREATE of an existing hidden name answers exactly as CREATE of a denied new name", async () => {
  const raw = await login();
  await unchanged(async () => {
    const replies: string[] = [];
    for (const name of [
      "Secret",
      "Nope",
      "SECRET",
      "Parent/Hidden",
      "Parent/Hidden2/../x",
      "Secret/child",
      "Nope/child",
      '"[Gmail]/All Mail"',
      '"[Gmail]/Nope"',
    ]) {
      const reply = await raw.command("c", `CREATE ${name}`);
      replies.push(reply);
    }
    // Invalid names (`..`) are refused for the name alone; every other reply is the same bytes.
    const valid = replies.filter((_, i) => i !== 4);
    for (const r of valid) expect(r).toBe("c NO [NOPERM] Not permitted: folder:write in this folder\r\n");
    expect(replies[4]).not.toContain("ALREADYEXISTS");
  });
  raw.close();
});

test("§7.16 CATENATE URLs to a hidden folder, to another folder or with nothing selected get BADURL", async () => {
  const raw = await login();
  await unchanged(async () => {
    expect(
      statusOf(await raw.command("a", 'APPEND Drafts CATENATE (URL "/INBOX;UIDVALIDITY=1/;UID=1")'), "a"),
    ).toStartWith("a NO [BADURL /INBOX;UIDVALIDITY=1/;UID=1]");
    expect(statusOf(await raw.command("s", "EXAMINE INBOX"), "s")).toStartWith("s OK");
    for (const url of ["/Secret/;UID=1", "/Parent/Hidden/;UID=1", "/Archive/;UID=1", "/Secret;UID=1"]) {
      const reply = await raw.command("b", `APPEND Drafts (\\Seen) CATENATE (TEXT {3+}\r\nabc URL "${url}")`);
      expect(statusOf(reply, "b")).toBe(`b NO [BADURL ${url}] CATENATE URL cannot be used`);
    }
    await alive(raw);
  });
  raw.close();
});

test("§7.17 URLFETCH, COMPRESS (not DEFLATE), NOTIFY, SETACL, SETMETADATA and friends are refused", async () => {
  const raw = await login();
  await unchanged(async () => {
    const attacks = [
      'URLFETCH "imap://u@h/INBOX;UIDVALIDITY=1/;UID=1;urlauth=anonymous:internal:abc"',
      "COMPRESS LZW",
      "NOTIFY SET (selected MessageNew (uid body.peek[header.fields (from to subject)]) MessageExpunge) " +
        "(subtree Secret (MessageNew))",
      "SETACL Secret evil lr",
      "GETACL Secret",
      "MYRIGHTS Secret",
      'SETMETADATA INBOX (/private/comment "x")',
      "GETMETADATA Secret /private/comment",
      "GETQUOTAROOT Secret",
      'XLIST "" *',
      "UNAUTHENTICATE",
      'GENURLAUTH "imap://u@h/Secret;UID=1" INTERNAL',
      "RESETKEY",
      "XFOO bar",
      "REPLACE 1 Drafts {3+}\r\nabc",
    ];
    for (const [i, a] of attacks.entries()) {
      const tag = `x${i}`;
      expect(statusOf(await raw.command(tag, a), tag)).toStartWith(`${tag} BAD`);
    }
    // Still plain text, still the same session.
    await alive(raw);
  });
  raw.close();
});

describe("§7.18 a literal carries data, never a command", () => {
  for (const kind of ["{N+}", "{N}"] as const) {
    test(`SEARCH SUBJECT ${kind} holding "\\r\\nb UID FETCH 1:* BODY[]\\r\\n"`, async () => {
      const raw = await login();
      await raw.command("s", "SELECT INBOX");
      const before = await upstreamState(mailbox);
      expect(seenCount(before, "INBOX")).toBe(0);
      const literal = "zzzzzzzzzzzzzz\r\nb UID FETCH 1:* BODY[]\r\n";
      expect(literal.length).toBe(40);
      if (kind === "{N+}") {
        raw.write(`a SEARCH SUBJECT {40+}\r\n${literal}\r\n`);
      } else {
        raw.write("a SEARCH SUBJECT {40}\r\n");
        await raw.readUntil((b) => b.includes("+ "));
        raw.write(`${literal}\r\n`);
      }
      const reply = await raw.waitTagged("a");
      expect(statusOf(reply, "a")).toStartWith("a OK");
      expect(reply).toContain("* SEARCH\r\n");
      expect(reply).not.toContain("FETCH");
      await raw.command("n", "NOOP");
      await Bun.sleep(100);
      expect(raw.take()).toBe("");
      // The FETCH would have set \Seen (INBOX may be flagged): nothing did.
      expect(await upstreamState(mailbox)).toEqual(before);
      raw.close();
    });
  }
});

describe("§7.19 sizes and literal8 fail closed", () => {
  test("{99999999999999999999} gets BAD before any + and the session survives", async () => {
    const raw = await login();
    await unchanged(async () => {
      raw.write("a APPEND Drafts {99999999999999999999}\r\n");
      const reply = await raw.waitTagged("a");
      expect(reply).not.toContain("+ ");
      expect(statusOf(reply, "a")).toStartWith("a BAD");
      // LITERAL+: a {n+} over the command's limit is consumed, then refused (RFC 7888 §4).
      const big = MAX_ARGUMENT_LITERAL + 1;
      raw.write(`b SEARCH TEXT {${big}+}\r\n${"x".repeat(big)}\r\n`);
      expect(statusOf(await raw.waitTagged("b"), "b")).toStartWith("b BAD [TOOBIG]");
      await alive(raw);
    });
    raw.close();
  });

  test("a literal refused under a tag that is not one (`+`, `(`) is answered untagged, not with `+`", async () => {
    const raw = await login();
    await unchanged(async () => {
      // RFC 9051 §9: tag = 1*<any ASTRING-CHAR except "+">. Echoed, `+ BAD ...` would read as a continuation.
      for (const tag of ["+", "a(b", "x{1}"]) {
        raw.write(`${tag} APPEND Drafts {999999999}\r\n`);
        const reply = await raw.readUntil((b) => b.includes("\r\n"));
        expect(reply).toStartWith("* BAD [TOOBIG] ");
        raw.take();
      }
      await alive(raw);
    });
    raw.close();
  });

  for (const size of ["99999999999999999999+", "99999999+"]) {
    test(`{${size}} cannot be skipped safely: BYE`, async () => {
      const raw = await login();
      await unchanged(async () => {
        raw.write(`a APPEND Drafts {${size}}\r\nFrom: x\r\n\r\nb\r\n`);
        await raw.readUntil(() => raw.closed);
        expect(raw.take()).toContain("* BYE");
      });
    });
  }

  test("~{4} outside APPEND gets BAD (RFC 3516 §4.4 allows literal8 in APPEND only), both literal forms", async () => {
    const raw = await login();
    await unchanged(async () => {
      raw.write("a SEARCH SUBJECT ~{4}\r\n");
      const reply = await raw.waitTagged("a");
      expect(reply).not.toContain("+ ");
      expect(statusOf(reply, "a")).toStartWith("a BAD");
      raw.write("b STATUS ~{4+}\r\n\0\0\0\0 (MESSAGES)\r\n");
      expect(statusOf(await raw.waitTagged("b"), "b")).toStartWith("b BAD");
      raw.write("c SEARCH SUBJECT {4+}\r\n\0abc\r\n");
      expect(statusOf(await raw.waitTagged("c"), "c")).toStartWith("c BAD");
      await alive(raw);
    });
    raw.close();
  });

  test("a 10 MB line gets BYE and the connection closes", async () => {
    const raw = await login();
    await unchanged(async () => {
      raw.write("a SEARCH SUBJECT " + "x".repeat(10 * 1024 * 1024) + "\r\n");
      await raw.readUntil(() => raw.closed, 20_000);
      expect(raw.take()).toContain("* BYE");
    });
  });
});

test("§7.20 a plaintext LOGIN pipelined after STARTTLS is discarded", async () => {
  const up = upstreams();
  const tls = join(up.dir, "tls");
  const starttls = await startTestProxy({
    rules: RULES,
    imap:
      `listen_tls = "starttls"\ntls_cert_file = "${join(tls, "server.pem")}"\n` +
      `tls_key_file = "${join(tls, "server.key")}"`,
  });
  try {
    const plain = await new Promise<Socket>((resolve, reject) => {
      const s = connect({ host: "127.0.0.1", port: starttls.port }, () => resolve(s));
      s.once("error", reject);
    });
    let clear = "";
    const onClear = (d: Buffer) => (clear += d.toString("latin1"));
    plain.on("data", onClear);
    const until = async (re: RegExp) => {
      for (let i = 0; i < 300 && !re.test(clear); i++) await Bun.sleep(10);
      expect(clear).toMatch(re);
    };
    await until(/\r\n/);
    expect(clear).toContain("STARTTLS");
    expect(clear).toContain("LOGINDISABLED");
    // One segment: STARTTLS, then a LOGIN in clear that a man in the middle could have added.
    plain.write(`a STARTTLS\r\nb LOGIN "${mailbox.user}" "${mailbox.password}"\r\n`);
    await until(/a OK[^\r]*\r\n/);
    plain.off("data", onClear);
    const secure = await new Promise<Socket>((resolve, reject) => {
      const s = tlsConnect({ socket: plain, ca: readFileSync(up.caFile), servername: "localhost" }, () => resolve(s));
      s.once("error", reject);
    });
    const raw = RawImap.fromSocket(secure);
    expect(clear).not.toContain("b ");
    // Not logged in: the pipelined LOGIN never ran.
    expect(statusOf(await raw.command("c", "SELECT INBOX"), "c")).toStartWith("c BAD");
    expect(raw.take()).not.toContain("b ");
    const caps = await raw.command("d", "CAPABILITY");
    expect(caps).not.toContain("STARTTLS");
    expect(caps).toContain("AUTH=PLAIN");
    const rows = await starttls.rows();
    expect(rows.some((r) => r.command === "LOGIN")).toBe(false);
    expect(statusOf(await raw.command("e", `LOGIN "${mailbox.user}" "${mailbox.password}"`), "e")).toStartWith("e OK");
    raw.close();
  } finally {
    await starttls.close();
  }
});

test("§7.21 a read-only agent's FETCH of BODY[], RFC822, RFC822.TEXT, BODY[TEXT] leaves \\Seen unset", async () => {
  const raw = await login();
  await unchanged(async () => {
    for (const folder of ["Archive", "Sent"]) {
      // Archive is opened read-write upstream (the agent may expunge there): PEEK alone keeps \Seen unset.
      const sel = await raw.command("s", `SELECT ${folder}`);
      expect(statusOf(sel, "s")).toStartWith(folder === "Archive" ? "s OK [READ-WRITE]" : "s OK [READ-ONLY]");
      const reply = await raw.command(
        "f",
        "FETCH 1:* (BODY[] RFC822 RFC822.TEXT BODY[TEXT] BODY[1] BODY[HEADER] FLAGS)",
      );
      expect(statusOf(reply, "f")).toStartWith("f OK");
      expect(reply).toContain("RFC822 {");
      expect(reply).toContain("BODY[] {");
      expect(reply).not.toContain("\\Seen");
      expect(reply).not.toContain("PEEK");
      const uid = await raw.command("u", "UID FETCH 1:* (RFC822)");
      expect(uid).toContain("RFC822 {");
    }
  });
  raw.close();
});

test("§7.22 STORE +FLAGS (\\DELETED) without mail:delete gets NO", async () => {
  const raw = await login();
  await unchanged(async () => {
    for (const folder of ["INBOX", "Drafts"]) {
      await raw.command("s", `SELECT ${folder}`);
      for (const store of [
        "STORE 1 +FLAGS (\\DELETED)",
        "STORE 1 +FLAGS.SILENT (\\deleted)",
        "UID STORE 1:* FLAGS (\\Seen \\Deleted)",
        "STORE 1 FLAGS ()",
        "STORE 1 +FLAGS (\\Seen \\Deleted)",
      ]) {
        expect(statusOf(await raw.command("a", store), "a")).toStartWith("a NO [NOPERM]");
      }
    }
  });
  raw.close();
});

describe("§7.23 a \\Deleted message the agent has not been shown survives its EXPUNGE and CLOSE", () => {
  for (const verb of ["EXPUNGE", "CLOSE", "UID EXPUNGE 1:*"]) {
    test(verb, async () => {
      const cleaner = await connectImap(mailbox);
      await cleaner.mailboxOpen("Trash");
      await cleaner.messageFlagsRemove("1:*", ["\\Deleted"]);
      await cleaner.logout();
      const raw = await login();
      expect(statusOf(await raw.command("s", "SELECT Trash"), "s")).toStartWith("s OK [READ-WRITE]");
      // The human appends a \Deleted message; the agent runs no command in between, so it has not been told.
      const human = await connectImap(mailbox);
      const appended = await human.append("Trash", `From: h@x.test\r\nSubject: human's ${verb}\r\n\r\nx\r\n`, [
        "\\Deleted",
      ]);
      await human.logout();
      const humanUid = appended && appended.uid;
      expect(typeof humanUid).toBe("number");
      const before = await upstreamState(mailbox);
      const reply = await raw.command("x", verb);
      expect(statusOf(reply, "x")).toStartWith("x OK");
      const after = await upstreamState(mailbox);
      expect(after.messages["Trash"]!.uids).toContain(`${humanUid} \\Deleted`);
      expect(after.messages["Trash"]!.uids).toEqual(before.messages["Trash"]!.uids);
      raw.close();
    });
  }

  test("\\Deleted messages in hidden folders and in other folders are never touched", async () => {
    const human = await connectImap(mailbox);
    for (const f of ["Secret", "Parent/Hidden", "Archive"]) {
      await human.mailboxOpen(f);
      await human.messageFlagsAdd("1", ["\\Deleted"]);
    }
    await human.logout();
    const raw = await login();
    const before = await upstreamState(mailbox);
    await raw.command("s", "SELECT Trash");
    await raw.command("x", "EXPUNGE");
    await raw.command("c", "CLOSE");
    const after = await upstreamState(mailbox);
    for (const f of ["Secret", "Parent/Hidden", "Archive"]) expect(after.messages[f]).toEqual(before.messages[f]!);
    // Clean up: the agent may expunge Archive, and only what it sees.
    await raw.command("s2", "SELECT Archive");
    expect(statusOf(await raw.command("x2", "EXPUNGE"), "x2")).toStartWith("x2 OK");
    const last = await upstreamState(mailbox);
    expect(last.messages["Archive"]!.uids.length).toBe(before.messages["Archive"]!.uids.length - 1);
    expect(last.messages["Secret"]).toEqual(before.messages["Secret"]!);
    raw.close();
  });
});

test("§7.24 COPY + STORE \\Deleted + EXPUNGE is blocked without mail:delete; MOVE without mail:move", async () => {
  const raw = await login();
  await raw.command("s", "SELECT INBOX");
  const before = await upstreamState(mailbox);
  // The copy itself is allowed (read here, append in Trash): the delete half is what must fail.
  expect(statusOf(await raw.command("c", "COPY 1 Trash"), "c")).toStartWith("c OK");
  expect(statusOf(await raw.command("d", "STORE 1 +FLAGS (\\Deleted)"), "d")).toStartWith("d NO [NOPERM]");
  expect(statusOf(await raw.command("e", "EXPUNGE"), "e")).toStartWith("e NO [NOPERM]");
  expect(statusOf(await raw.command("m", "UID MOVE 1:* Trash"), "m")).toStartWith("m NO [NOPERM]");
  expect(statusOf(await raw.command("m2", "MOVE 1 Trash"), "m2")).toStartWith("m2 NO [NOPERM]");
  expect(statusOf(await raw.command("cl", "CLOSE"), "cl")).toStartWith("cl OK");
  const after = await upstreamState(mailbox);
  expect(after.messages["INBOX"]).toEqual(before.messages["INBOX"]!);
  expect(after.messages["Trash"]!.uids.length).toBe(before.messages["Trash"]!.uids.length + 1);
  // The destination side too: Archive may not be appended to.
  await raw.command("s2", "SELECT Trash");
  await unchanged(async () => {
    expect(statusOf(await raw.command("m3", "UID MOVE 1:* Archive"), "m3")).toStartWith("m3 NO [NOPERM]");
    expect(statusOf(await raw.command("m4", "UID MOVE 1:* Secret"), "m4")).toStartWith("m4 NO [TRYCREATE]");
  });
  raw.close();
});

test("§7.25 RENAME INBOX and DELETE or RENAME of a folder with a hidden child are denied", async () => {
  const raw = await login();
  await newRows();
  await unchanged(async () => {
    // INBOX may be managed and Parent/Old may be created: only the RENAME INBOX rule stands in the way.
    expect(statusOf(await raw.command("a", "RENAME INBOX Parent/Old"), "a")).toStartWith("a NO [NOPERM]");
    expect(statusOf(await raw.command("a2", "RENAME inbox Parent/Old"), "a2")).toStartWith("a2 NO [NOPERM]");
    expect(statusOf(await raw.command("b", "DELETE Parent"), "b")).toStartWith("b NO [NOPERM]");
    expect(statusOf(await raw.command("c", "RENAME Parent Trash/Parent"), "c")).toStartWith("c NO [NOPERM]");
    expect(statusOf(await raw.command("d", "DELETE Parent/Hidden"), "d")).toStartWith("d NO [NONEXISTENT]");
    expect(statusOf(await raw.command("e", "RENAME Parent/Hidden Parent/Shown"), "e")).toStartWith(
      "e NO [NONEXISTENT]",
    );
    expect(statusOf(await raw.command("f", "RENAME Trash Parent/Hidden"), "f")).toStartWith("f NO [NOPERM]");
  });
  const rows = await newRows();
  expect(rows.filter((r) => r.decision === "deny").length).toBeGreaterThanOrEqual(7);
  raw.close();
});

test("DELETE and RENAME answer the same whether or not a hidden child exists: the rules decide", async () => {
  const raw = await login();
  // Parent has a hidden child (Parent/Hidden). Parent/Leaf has none, but the rules would hide any child of it
  // (Parent/* is one level, and nothing else is allowed): both are refused, with the same words.
  expect(statusOf(await raw.command("c", "CREATE Parent/Leaf"), "c")).toStartWith("c OK");
  await newRows();
  const line = (reply: string, tag: string) => statusOf(reply, tag).slice(tag.length);
  await unchanged(async () => {
    const withHidden = line(await raw.command("d1", "DELETE Parent"), "d1");
    const withNone = line(await raw.command("d2", "DELETE Parent/Leaf"), "d2");
    expect(withHidden).toStartWith(" NO [NOPERM]");
    expect(withNone).toBe(withHidden);
    const renameHidden = line(await raw.command("r1", "RENAME Parent Trash/Parent"), "r1");
    const renameNone = line(await raw.command("r2", "RENAME Parent/Leaf Trash/Leaf"), "r2");
    expect(renameHidden).toStartWith(" NO [NOPERM]");
    expect(renameNone).toBe(renameHidden);
  });
  const rows = await newRows();
  expect(rows.filter((r) => r.decision === "deny" && r.reason.includes("may hide folders below")).length).toBe(4);
  // Trash/** is wholly the agent's: a folder there is deleted as before.
  expect(statusOf(await raw.command("t1", "CREATE Trash/Tmp"), "t1")).toStartWith("t1 OK");
  expect(statusOf(await raw.command("t2", "DELETE Trash/Tmp"), "t2")).toStartWith("t2 OK");
  raw.close();
});

test("§7.26 STORE -X-GM-LABELS gets BAD", async () => {
  const raw = await login();
  await unchanged(async () => {
    await raw.command("s", "SELECT INBOX");
    expect(statusOf(await raw.command("a", "STORE 1 -X-GM-LABELS (\\Inbox)"), "a")).toStartWith("a BAD");
    expect(statusOf(await raw.command("b", "UID STORE 1 +X-GM-LABELS.SILENT (Secret)"), "b")).toStartWith("b BAD");
    await alive(raw);
  });
  raw.close();
});
