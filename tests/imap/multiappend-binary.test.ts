/**
 * MULTIAPPEND (RFC 3502) and BINARY (RFC 3516) through the proxy against the real Dovecot (docs/protocol.md §2):
 * raw sockets for exact bytes, imapflow (literal8 APPEND, FETCH BINARY downloads) as the real client, and Dovecot read
 * directly after every write. INBOX is filtered (only notifications@ senders are visible): FETCH BINARY of a hidden
 * UID, BINARY.SIZE over the whole folder and a MULTIAPPEND into a hidden folder must tell nothing a nonexistent
 * message or folder would not.
 */

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { authCapabilities } from "../../src/imap/capabilities.ts";
import { MAX_LITERALS_PER_COMMAND } from "../../src/imap/limits.ts";
import { connectImap, createMailbox, type TestMailbox, upstreams } from "../fixtures/index.ts";
import { type Expected, expected, expectNoLeak, fetchedUids, rawMessage } from "./filtered-fixture.ts";
import {
  auditCursor,
  proxyClient,
  RawImap,
  startTestProxy,
  statusOf,
  type TestProxy,
  upstreamState,
} from "./helpers.ts";

const RULES = `
[[rules]]
name = "filtered inbox"
folders = ["INBOX"]
from = "notifications@*"
action = "allow"
operations = ["read"]

[[rules]]
name = "drafts"
folders = ["Drafts"]
action = "allow"
operations = ["read", "mail:flag", "mail:append"]

[[rules]]
name = "own"
folders = ["Own", "Own/*"]
action = "allow"

[[rules]]
name = "nothing else"
action = "deny"
`;

let mailbox: TestMailbox;
let proxy: TestProxy;
let e: Expected;
let newRows: ReturnType<typeof auditCursor>;

async function agent(): Promise<RawImap> {
  return RawImap.login(proxy.port, mailbox);
}

/** Sends an APPEND of `parts` (each `opts` then a message) with synchronizing literals, waiting for each `+`. */
async function multiAppend(
  raw: RawImap,
  tag: string,
  mailboxName: string,
  parts: ReadonlyArray<{ opts?: string; body: string | Buffer; binary?: boolean }>,
): Promise<string> {
  let line = `${tag} APPEND ${mailboxName}`;
  for (let i = 0; i < parts.length; i++) {
    const p = parts[i]!;
    const body = typeof p.body === "string" ? Buffer.from(p.body, "latin1") : p.body;
    raw.write(`${line}${p.opts ? ` ${p.opts}` : ""} ${p.binary ? "~" : ""}{${body.length}}\r\n`);
    const got = await raw.readUntil((b) => b.includes("+ ") || new RegExp(`${tag} (OK|NO|BAD)`).test(b));
    if (!got.includes("+ ")) return raw.waitTagged(tag);
    raw.take(got.indexOf("\r\n", got.indexOf("+ ")) + 2);
    raw.write(body);
    line = "";
  }
  raw.write("\r\n");
  return raw.waitTagged(tag);
}

function msg(subject: string): string {
  return rawMessage("me@mailgator.test", subject, subject.replace(/\W/g, ""));
}

beforeAll(async () => {
  mailbox = await createMailbox({ seed: { folders: { INBOX: 60, Drafts: 1 }, seed: 31 } });
  const human = await connectImap(mailbox);
  await human.mailboxCreate("Own");
  await human.mailboxCreate("Secret");
  await human.logout();
  e = expected(mailbox.manifest.folders["INBOX"]!);
  expect(e.visible.length).toBeGreaterThan(5);
  expect(e.hidden.length).toBeGreaterThan(5);
  proxy = await startTestProxy({ rules: RULES });
  newRows = auditCursor(proxy);
});

afterAll(async () => {
  await proxy?.close();
});

describe("capabilities", () => {
  test("MULTIAPPEND and BINARY are offered after login (Dovecot offers both), not before", async () => {
    const raw = await RawImap.open(proxy.port);
    const before = await raw.command("a", "CAPABILITY");
    expect(before).not.toMatch(/MULTIAPPEND|BINARY/);
    const login = await raw.command("L", `LOGIN "${mailbox.user}" "${mailbox.password}"`);
    expect(statusOf(login, "L")).toMatch(/^L OK \[CAPABILITY [^\]]*\bMULTIAPPEND\b[^\]]*\bBINARY\b/);
    expect(await raw.command("b", "CAPABILITY")).toMatch(/^\* CAPABILITY .*\bMULTIAPPEND\b.*\bBINARY\b/);
    raw.close();
  });

  test("an upstream without them: neither is offered (the proxy relays them, it does not emulate them)", () => {
    expect(authCapabilities(new Set(["IMAP4REV1", "UIDPLUS", "UNSELECT"]))).not.toContain("MULTIAPPEND");
    expect(authCapabilities(new Set(["IMAP4REV1", "MULTIAPPEND"]))).not.toContain("BINARY");
    expect(authCapabilities(new Set(["BINARY", "MULTIAPPEND"]))).toEqual(
      expect.arrayContaining(["BINARY", "MULTIAPPEND"]),
    );
    expect(authCapabilities(null)).not.toContain("MULTIAPPEND");
  });
});

describe("MULTIAPPEND", () => {
  test("three messages in one APPEND: one APPENDUID range, three allow rows, all three upstream", async () => {
    const raw = await agent();
    const before = await upstreamState(mailbox);
    await newRows();
    const reply = await multiAppend(raw, "a", "Drafts", [
      { opts: "(\\Draft)", body: msg("multi one") },
      { body: msg("multi two") },
      { opts: '(\\Seen) "04-Jul-2024 10:00:00 +0000"', body: msg("multi three") },
    ]);
    const next = before.messages["Drafts"]!.uidNext;
    expect(statusOf(reply, "a")).toMatch(new RegExp(`^a OK \\[APPENDUID \\d+ ${next}:${next + 2}\\]`));
    const after = await upstreamState(mailbox);
    expect(after.messages["Drafts"]!.uids.slice(-3)).toEqual([`${next} \\Draft`, `${next + 1}`, `${next + 2} \\Seen`]);
    const rows = (await newRows()).filter((r) => r.command === "APPEND");
    expect(rows.map((r) => [r.decision, r.folder, r.target?.replace(/, \d+ octets/, "")])).toEqual([
      ["allow", "Drafts", "message 1 of 3"],
      ["allow", "Drafts", "message 2 of 3"],
      ["allow", "Drafts", "message 3 of 3"],
    ]);
    raw.close();
  });

  test("one message the rules refuse (\\Deleted without mail:delete) refuses all: nothing appended", async () => {
    const raw = await agent();
    const before = await upstreamState(mailbox);
    const reply = await multiAppend(raw, "a", "Drafts", [
      { body: msg("refused one") },
      { opts: "(\\Deleted)", body: msg("refused two") },
    ]);
    expect(statusOf(reply, "a")).toStartWith("a NO [NOPERM]");
    expect(await upstreamState(mailbox)).toEqual(before);
    const rows = (await newRows()).filter((r) => r.command === "APPEND");
    expect(rows.map((r) => [r.decision, r.operation])).toEqual([["deny", "mail:delete"]]);
    raw.close();
  });

  test("one message upstream refuses (zero octets) refuses all: upstream's MULTIAPPEND is atomic", async () => {
    const raw = await agent();
    const before = await upstreamState(mailbox);
    const reply = await multiAppend(raw, "a", "Drafts", [{ body: msg("atomic one") }, { body: "" }]);
    expect(statusOf(reply, "a")).toStartWith("a NO");
    expect(await upstreamState(mailbox)).toEqual(before);
    raw.close();
  });

  test(`${MAX_LITERALS_PER_COMMAND} messages are one APPEND; one more: BAD [LIMIT], nothing appended`, async () => {
    const raw = await agent();
    const before = await upstreamState(mailbox);
    const many = (n: number, p: string) => Array.from({ length: n }, (_, i) => ({ body: msg(`${p} ${i}`) }));
    const over = await multiAppend(raw, "a", "Own", many(MAX_LITERALS_PER_COMMAND + 1, "over"));
    expect(statusOf(over, "a")).toStartWith("a BAD [LIMIT]");
    expect(await upstreamState(mailbox)).toEqual(before);
    const at = await multiAppend(raw, "b", "Own", many(MAX_LITERALS_PER_COMMAND, "at"));
    expect(statusOf(at, "b")).toStartWith("b OK [APPENDUID");
    const after = await upstreamState(mailbox);
    expect(after.messages["Own"]!.uids.length).toBe(before.messages["Own"]!.uids.length + MAX_LITERALS_PER_COMMAND);
    expect(statusOf(await raw.command("c", "NOOP"), "c")).toStartWith("c OK");
    raw.close();
  });

  test("attack: MULTIAPPEND into a hidden folder answers exactly as into an allowed, nonexistent one", async () => {
    const raw = await agent();
    const before = await upstreamState(mailbox);
    const parts = [{ body: msg("probe one") }, { body: msg("probe two") }];
    const hidden = await multiAppend(raw, "a", "Secret", parts);
    const absent = await multiAppend(raw, "a", "Own/Nowhere", parts);
    expect(hidden).toBe(absent);
    expect(statusOf(hidden, "a")).toStartWith("a NO [TRYCREATE]");
    // The filtered INBOX does not allow append: refused as such, never "nonexistent".
    const inbox = await multiAppend(raw, "b", "INBOX", parts);
    expect(statusOf(inbox, "b")).toStartWith("b NO [NOPERM]");
    expect(await upstreamState(mailbox)).toEqual(before);
    raw.close();
  });
});

describe("BINARY", () => {
  const payload = Buffer.from(Array.from({ length: 300 }, (_, i) => (i * 7) % 256));
  const mime = (boundary: string) =>
    [
      "From: me@mailgator.test",
      "To: me@mailgator.test",
      "Subject: binary attachment",
      "Message-ID: <binary-attachment@binary.test>",
      "MIME-Version: 1.0",
      `Content-Type: multipart/mixed; boundary="${boundary}"`,
      "",
      `--${boundary}`,
      "Content-Type: text/plain",
      "",
      "see attached",
      `--${boundary}`,
      "Content-Type: application/octet-stream",
      "Content-Transfer-Encoding: base64",
      "",
      payload.toString("base64").replace(/(.{76})/g, "$1\r\n"),
      `--${boundary}--`,
      "",
    ].join("\r\n");

  test("imapflow: download with binary:true gets the decoded attachment through FETCH BINARY", async () => {
    const client = await proxyClient(proxy.port, mailbox.user, mailbox.password);
    try {
      expect(client.capabilities.has("BINARY")).toBe(true);
      const appended = await client.append("Own", mime("b1"), []);
      expect(appended).not.toBe(false);
      await client.mailboxOpen("Own");
      const uid = (appended as { uid: number }).uid;
      const { meta, content } = await client.download(String(uid), "2", { uid: true, binary: true });
      const chunks: Buffer[] = [];
      for await (const c of content!) chunks.push(c as Buffer);
      expect(Buffer.concat(chunks)).toEqual(payload);
      expect(meta!.contentType).toBe("application/octet-stream");
      const raw = await agent();
      await raw.command("s", "EXAMINE Own");
      const size = await raw.command("f", `UID FETCH ${uid} (BINARY.SIZE[2] BINARY.PEEK[2])`);
      raw.close();
      expect(size).toContain(`BINARY.SIZE[2] ${payload.length}`);
      expect(statusOf(size, "f")).toStartWith("f OK");
    } finally {
      await client.logout();
    }
  });

  test("imapflow appends a message with NUL octets as literal8; Dovecot holds it", async () => {
    const client = await proxyClient(proxy.port, mailbox.user, mailbox.password);
    const body = Buffer.concat([
      Buffer.from(
        "From: me@mailgator.test\r\nSubject: nul octets\r\nMessage-ID: <nul@binary.test>\r\n" +
          "Content-Transfer-Encoding: binary\r\n\r\n",
      ),
      Buffer.from([0x61, 0x00, 0x62, 0x00, 0x0d, 0x0a]),
    ]);
    try {
      const before = await upstreamState(mailbox);
      const appended = await client.append("Own", body, ["\\Seen"]);
      expect(appended).not.toBe(false);
      const uid = (appended as { uid: number }).uid;
      expect(uid).toBe(before.messages["Own"]!.uidNext);
      const rows = (await newRows()).filter((r) => r.command === "APPEND");
      expect(rows.at(-1)?.target).toBe(`${body.length} octets`);
    } finally {
      await client.logout();
    }
    const human = await connectImap(mailbox);
    try {
      await human.mailboxOpen("Own", { readOnly: true });
      const m = await human.fetchOne("*", { size: true, flags: true, envelope: true });
      expect(m && m.envelope?.subject).toBe("nul octets");
      expect(m && [...(m.flags ?? [])]).toContain("\\Seen");
    } finally {
      await human.logout();
    }
  });

  test("raw: ~{n} APPEND is accepted with +; literal8 outside APPEND gets BAD without +", async () => {
    const raw = await agent();
    const reply = await multiAppend(raw, "a", "Own", [
      { body: Buffer.from("Subject: x\r\n\r\na\0b\r\n"), binary: true },
    ]);
    expect(statusOf(reply, "a")).toStartWith("a OK [APPENDUID");
    // A literal (not literal8) still may not carry NUL: CHAR8 excludes it.
    expect(statusOf(await multiAppend(raw, "b", "Own", [{ body: "a\0b" }]), "b")).toStartWith("b BAD");
    raw.write("c SEARCH SUBJECT ~{4}\r\n");
    const search = await raw.waitTagged("c");
    expect(search).not.toContain("+ ");
    expect(statusOf(search, "c")).toStartWith("c BAD");
    raw.write("d SEARCH SUBJECT ~{4+}\r\n\0abc\r\n");
    expect(statusOf(await raw.waitTagged("d"), "d")).toStartWith("d BAD");
    expect(statusOf(await raw.command("e", "NOOP"), "e")).toStartWith("e OK");
    raw.close();
  });

  test("attack: BINARY of a hidden UID answers exactly as a nonexistent UID", async () => {
    const raw = await agent();
    await raw.command("s", "EXAMINE INBOX");
    const hiddenUid = e.hidden[0]!.uid;
    const items = "(BINARY.PEEK[] BINARY.SIZE[] BINARY.PEEK[1]<0.10>)";
    const hidden = await raw.command("f", `UID FETCH ${hiddenUid} ${items}`);
    const absent = await raw.command("f", `UID FETCH 99999 ${items}`);
    expect(hidden).toBe(absent);
    expect(hidden).toBe("f OK Fetch completed\r\n");
    raw.close();
  });

  test("attack: BINARY.SIZE and BINARY over a filtered folder give visible messages only, renumbered", async () => {
    const raw = await agent();
    await raw.command("s", "EXAMINE INBOX");
    const sizes = await raw.command("f", "FETCH 1:* (UID BINARY.SIZE[])");
    expect(statusOf(sizes, "f")).toStartWith("f OK");
    expect(fetchedUids(sizes)).toEqual(e.visibleUids.map((u, i) => [i + 1, u]));
    const bodies = await raw.command("g", "UID FETCH 1:* (BINARY.PEEK[])");
    expect(fetchedUids(bodies).map(([, u]) => u)).toEqual([...e.visibleUids]);
    for (const m of e.visible.slice(0, 5)) expect(bodies).toContain(m.messageId);
    expectNoLeak(sizes + bodies, e);
    // The sizes are Dovecot's own for those messages, asked directly.
    const up = upstreams();
    const direct = await RawImap.open(up.ports.imaps, { tls: true });
    await direct.command("L", `LOGIN "${mailbox.user}" "${mailbox.password}"`);
    await direct.command("s", "EXAMINE INBOX");
    const want = await direct.command("f", `UID FETCH ${e.visibleUids.join(",")} (UID BINARY.SIZE[])`);
    direct.close();
    const pairs = (b: string) => Array.from(b.matchAll(/UID (\d+) BINARY\.SIZE\[\] (\d+)/g), (m) => `${m[1]} ${m[2]}`);
    expect(pairs(sizes)).toEqual(pairs(want));
    expect(pairs(sizes).length).toBe(e.visibleUids.length);
    raw.close();
  });

  test("a part whose Content-Transfer-Encoding upstream cannot decode: NO [UNKNOWN-CTE], as from Dovecot", async () => {
    // RFC 3516 §4.2: the NO must carry UNKNOWN-CTE, so that a client can tell it from a failure worth retrying
    // (RFC 9051 §7.1). The proxy decodes nothing itself: upstream refuses, and its code reaches the agent.
    const human = await connectImap(mailbox);
    await human.mailboxCreate("Own/Cte");
    const message = [
      "From: me@mailgator.test",
      "Subject: uuencoded",
      "MIME-Version: 1.0",
      "Content-Type: multipart/mixed; boundary=b",
      "",
      "--b",
      "Content-Type: application/octet-stream",
      "Content-Transfer-Encoding: x-uuencode",
      "",
      "begin 644 x",
      "end",
      "--b--",
      "",
    ].join("\r\n");
    await human.append("Own/Cte", message, []);
    await human.logout();
    const items = ["BINARY.PEEK[1]", "BINARY.SIZE[1]", "BINARY.PEEK[1]<0.4>"];
    const up = upstreams();
    const direct = await RawImap.open(up.ports.imaps, { tls: true });
    await direct.command("L", `LOGIN "${mailbox.user}" "${mailbox.password}"`);
    await direct.command("s", "EXAMINE Own/Cte");
    const raw = await agent();
    await raw.command("s", "EXAMINE Own/Cte");
    for (const item of items) {
      const want = statusOf(await direct.command("f", `FETCH 1 (${item})`), "f");
      expect(want).toStartWith("f NO [UNKNOWN-CTE]");
      const got = await raw.command("f", `FETCH 1 (${item})`);
      expect(got).toStartWith("f NO [UNKNOWN-CTE] ");
      expect(statusOf(await raw.command("u", `UID FETCH 1 (${item})`), "u")).toStartWith("u NO [UNKNOWN-CTE] ");
    }
    // The part as it is stored, and the message's other data, are still there.
    expect(statusOf(await raw.command("b", "FETCH 1 (BODY.PEEK[1])"), "b")).toBe("b OK Fetch completed");
    direct.close();
    raw.close();
  });

  test("attack: a literal8 APPEND into a hidden folder answers exactly as into a nonexistent one", async () => {
    const raw = await agent();
    const before = await upstreamState(mailbox);
    const part = [{ body: Buffer.from("Subject: y\r\n\r\n\0\r\n"), binary: true }];
    const hidden = await multiAppend(raw, "a", "Secret", part);
    expect(hidden).toBe(await multiAppend(raw, "a", "Own/Nowhere", part));
    expect(statusOf(hidden, "a")).toStartWith("a NO [TRYCREATE]");
    expect(await upstreamState(mailbox)).toEqual(before);
    raw.close();
  });
});
