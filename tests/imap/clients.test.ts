/**
 * Real clients through the proxy under allow-all rules get the same data as directly from Dovecot:
 * imapflow (login, LIST, SELECT, SEARCH, FETCH bodies, IDLE until a message arrives, STORE, MOVE, APPEND,
 * LOGOUT), Python's imaplib and curl.
 */

import { afterAll, beforeAll, expect, test } from "bun:test";
import type { ImapFlow } from "imapflow";
import { connectImap, createMailbox, type TestMailbox } from "../fixtures/index.ts";
import { proxyClient, startTestProxy, type TestProxy } from "./helpers.ts";

let proxy: TestProxy;
let direct: TestMailbox;
let viaProxy: TestMailbox;
let direct2: TestMailbox;
let viaProxy2: TestMailbox;

beforeAll(async () => {
  // Two users seeded identically: one is used directly, the other through the proxy.
  const seed = { folders: { INBOX: 30, Archive: 5 }, seed: 7 };
  direct = await createMailbox({ name: "clients-a", seed });
  viaProxy = await createMailbox({ name: "clients-b", seed });
  direct2 = await createMailbox({ name: "clients-c", seed });
  viaProxy2 = await createMailbox({ name: "clients-d", seed });
  proxy = await startTestProxy();
});

afterAll(async () => {
  await proxy.close();
});

/** The same session on both sides; returns what a client would show a user. */
async function session(client: ImapFlow): Promise<unknown> {
  const out: Record<string, unknown> = {};
  out["list"] = (await client.list())
    .map((f) => ({ path: f.path, specialUse: f.specialUse ?? null, flags: [...f.flags].sort() }))
    .sort((a, b) => a.path.localeCompare(b.path));
  const box = await client.mailboxOpen("INBOX");
  out["open"] = { exists: box.exists, uidNext: box.uidNext, flags: [...box.flags].sort() };
  out["search"] = await client.search({ seen: false }, { uid: true });
  const fetched: unknown[] = [];
  // ENVELOPE and BODYSTRUCTURE include multi-address To/Cc and multipart messages, which Dovecot writes as
  // `((..)(..))` with no space (RFC 3501 §9); the seed has both (checked below).
  for await (const m of client.fetch("1:*", {
    uid: true,
    flags: true,
    size: true,
    source: true,
    internalDate: true,
    envelope: true,
    bodyStructure: true,
  })) {
    fetched.push({
      seq: m.seq,
      uid: m.uid,
      flags: [...(m.flags ?? [])].sort(),
      size: m.size,
      source: m.source?.toString("latin1"),
      date: m.internalDate?.toString(),
      envelope: m.envelope,
      bodyStructure: m.bodyStructure,
    });
  }
  out["fetch"] = fetched;
  out["store"] = await client.messageFlagsAdd("1:3", ["\\Flagged"]);
  const two = await client.fetchOne("2", { flags: true });
  out["afterStore"] = two && two.flags ? [...two.flags].sort() : null;
  const moved = await client.messageMove("4:5", "Archive");
  out["move"] = moved ? { uidMap: moved.uidMap ? [...moved.uidMap.entries()] : null } : null;
  const appended = await client.append("Drafts", "From: a@b.test\r\nSubject: draft\r\n\r\nhello\r\n", ["\\Draft"]);
  out["append"] = appended ? { uid: appended.uid ?? null } : null;
  out["exists"] = client.mailbox ? (client.mailbox as { exists: number }).exists : null;
  out["status"] = await client.status("Archive", { messages: true, unseen: true, uidNext: true });
  return out;
}

test("imapflow: the same session directly and through the proxy gives the same data", async () => {
  const inbox = viaProxy.manifest.folders["INBOX"] ?? [];
  expect(inbox.some((m) => m.to.length > 1)).toBe(true);
  expect(inbox.some((m) => m.cc.length > 1)).toBe(true);
  expect(inbox.some((m) => m.hasAttachment)).toBe(true);
  const a = await connectImap(direct);
  const b = await proxyClient(proxy.port, viaProxy.user, viaProxy.password);
  try {
    const [d, p] = [await session(a), await session(b)];
    expect(JSON.stringify(p).replaceAll(viaProxy.user, "U")).toBe(JSON.stringify(d).replaceAll(direct.user, "U"));
  } finally {
    await a.logout();
    await b.logout();
  }
  const rows = await proxy.rows();
  expect(rows.some((r) => r.command.endsWith("MOVE") && r.decision === "allow" && r.rule === "everything")).toBe(true);
  expect(rows.some((r) => r.command === "APPEND" && r.decision === "allow")).toBe(true);
});

test("imapflow: IDLE through the proxy reports a new message", async () => {
  const b = await proxyClient(proxy.port, viaProxy.user, viaProxy.password);
  const writer = await connectImap(viaProxy);
  try {
    await b.mailboxOpen("INBOX");
    const before = (b.mailbox as { exists: number }).exists;
    const arrived = new Promise<number>((resolve) => b.on("exists", (ev: { count: number }) => resolve(ev.count)));
    const idling = b.idle();
    await Bun.sleep(300);
    await writer.append("INBOX", "From: x@y.test\r\nSubject: new one\r\n\r\nbody\r\n");
    const count = await Promise.race([arrived, Bun.sleep(10_000).then(() => -1)]);
    expect(count).toBe(before + 1);
    const last = await b.fetchOne("*", { envelope: true });
    expect(last && last.envelope?.subject).toBe("new one");
    void idling;
  } finally {
    await writer.logout();
    await b.logout();
  }
});

test("Python imaplib: login, select, search, fetch, logout", async () => {
  const script = `
import imaplib, sys
c = imaplib.IMAP4("127.0.0.1", int(sys.argv[1]))
c.login(sys.argv[2], sys.argv[3])
typ, data = c.select("Archive")
print("select", typ, data[0].decode())
typ, data = c.search(None, "ALL")
print("search", typ, data[0].decode())
typ, data = c.fetch("1", "(RFC822.SIZE BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
print("fetch", typ, len(data))
typ, data = c.list()
print("list", typ, len(data))
c.logout()
`;
  // Asynchronous spawns: the proxy runs in this process.
  const run = (port: number, user: TestMailbox) =>
    new Response(Bun.spawn(["/usr/bin/python3", "-c", script, String(port), user.user, user.password]).stdout).text();
  const d = await run(direct2.upstreams.ports.imap, direct2);
  const p = await run(proxy.port, viaProxy2);
  expect(d).toContain("select OK");
  expect(p).toBe(d);
});

test("curl: fetches a message by UID the same way", async () => {
  const fetchWith = (port: number, user: TestMailbox) =>
    new Response(
      Bun.spawn([
        "curl",
        "-s",
        "--max-time",
        "10",
        "-u",
        `${user.user}:${user.password}`,
        `imap://127.0.0.1:${port}/Archive;UID=1`,
      ]).stdout,
    ).text();
  const d = (await fetchWith(direct2.upstreams.ports.imap, direct2)).replaceAll(direct2.user, "U");
  const p = (await fetchWith(proxy.port, viaProxy2)).replaceAll(viaProxy2.user, "U");
  expect(d.length).toBeGreaterThan(100);
  expect(p).toBe(d);
});
