/**
 * A filtered INBOX through real clients (the seed config's rules, verbatim): imapflow, Python's imaplib and curl see
 * exactly the seeded mailbox's notifications@ messages, numbered 1..n, in every command they send. Expected sets
 * come from the seeder's manifest, never from the proxy. Also: the config refusal of message conditions on
 * writes, audit rows with visible and hidden counts (and nothing hidden in them), and the classification cache.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { ConfigError, parseConfig } from "../../src/config/index.ts";
import { createMailbox, type TestMailbox } from "../fixtures/index.ts";
import { type Expected, expected, SEED_RULES } from "./filtered-fixture.ts";
import { proxyClient, startTestProxy, type TestProxy } from "./helpers.ts";

let mailbox: TestMailbox;
let proxy: TestProxy;
let e: Expected;

beforeAll(async () => {
  mailbox = await createMailbox({ seed: { folders: { INBOX: 1200, Archive: 30 }, seed: 5, attachmentRatio: 0.2 } });
  e = expected(mailbox.manifest.folders["INBOX"]!);
  proxy = await startTestProxy({ rules: SEED_RULES });
});

afterAll(async () => {
  await proxy?.close();
});

describe("config", () => {
  /** The config problems of an [imap] config with these rules, as loadConfig (check, explain, serve) reports them. */
  const problems = (rules: string): string => {
    try {
      parseConfig(
        `[imap]\nlisten_addr = "127.0.0.1:1993"\nupstream_addr = "imap.example.test:993"\n\n${rules}`,
        "/x/mailgator.toml",
      );
      return "";
    } catch (error) {
      if (error instanceof ConfigError) return error.message;
      throw error;
    }
  };

  test("the seed rules load; message conditions on a write operation are refused where they are written", () => {
    expect(problems(SEED_RULES)).toBe("");
    expect(problems(`[[rules]]\nname = "s"\nfrom = "a@*"\naction = "allow"\noperations = ["read", "send"]\n`)).toBe("");
    const flag = problems(
      `[[rules]]\nname = "flag boss"\nfrom = "boss@*"\naction = "allow"\noperations = ["read", "mail:flag"]\n`,
    );
    expect(flag).toContain("/x/mailgator.toml:9:14: rules[0].operations: message conditions (from) apply only to");
    expect(flag).toContain("also covers mail:flag");
    const all = problems(`[[rules]]\nname = "any"\nsubject = "x*"\naction = "deny"\n`);
    expect(all).toContain("/x/mailgator.toml:7:11: rules[0].subject: message conditions (subject)");
    expect(all).toContain("every operation (operations is omitted)");
  });
});

describe("imapflow", () => {
  test("SELECT, FETCH 1:*, SEARCH, STATUS, a body: exactly the visible messages", async () => {
    const client = await proxyClient(proxy.port, mailbox.user, mailbox.password);
    try {
      const box = await client.mailboxOpen("INBOX", { readOnly: true });
      expect(box.exists).toBe(e.visible.length);
      expect(Number(box.uidNext)).toBe(e.visibleUids[e.visibleUids.length - 1]! + 1);
      const seen: Array<{ seq: number; uid: number; subject: string; flags: string[] }> = [];
      for await (const m of client.fetch("1:*", { uid: true, envelope: true, flags: true })) {
        seen.push({
          seq: m.seq,
          uid: m.uid,
          subject: m.envelope?.subject ?? "",
          flags: [...(m.flags ?? [])].filter((f) => f !== "\\Recent").sort(),
        });
      }
      expect(seen).toEqual(
        e.visible.map((m, i) => ({ seq: i + 1, uid: m.uid, subject: m.subject, flags: [...m.flags].sort() })),
      );
      expect(await client.search({ all: true }, { uid: true })).toEqual([...e.visibleUids]);
      const unseen = e.visible.filter((m) => !m.flags.includes("\\Seen"));
      expect(await client.search({ seen: false }, { uid: true })).toEqual(unseen.map((m) => m.uid));
      expect(await client.search({ from: "evil" })).toEqual([]);
      const withAttachment = e.visible.find((m) => m.hasAttachment) ?? e.visible[0]!;
      const one = await client.fetchOne(String(withAttachment.uid), { source: true }, { uid: true });
      expect(one ? (one.source?.toString("latin1") ?? "") : "").toContain(withAttachment.messageId);
      await client.mailboxClose();
      const status = await client.status("INBOX", { messages: true, unseen: true, uidNext: true });
      expect(status !== false && status.messages).toBe(e.visible.length);
      expect(status !== false && status.unseen).toBe(unseen.length);
    } finally {
      await client.logout();
    }
  });
});

test("Python imaplib: select, search, fetch by sequence number and by UID", async () => {
  const script = `
import imaplib, sys
c = imaplib.IMAP4("127.0.0.1", int(sys.argv[1]))
c.login(sys.argv[2], sys.argv[3])
typ, data = c.select("INBOX", readonly=True)
print("select", typ, data[0].decode())
typ, data = c.search(None, "ALL")
print("search", data[0].decode())
typ, data = c.uid("SEARCH", None, "ALL")
print("uidsearch", data[0].decode())
typ, data = c.fetch("1:*", "(UID)")
print("fetch", " ".join(d.decode() for d in data))
typ, data = c.uid("FETCH", sys.argv[4], "(BODY.PEEK[HEADER.FIELDS (FROM)])")
print("hidden", typ, data)
c.logout()
`;
  const out = await new Response(
    Bun.spawn([
      "/usr/bin/python3",
      "-c",
      script,
      String(proxy.port),
      mailbox.user,
      mailbox.password,
      String(e.hidden[0]!.uid),
    ]).stdout,
  ).text();
  const lines = Object.fromEntries(
    out
      .trim()
      .split("\n")
      .map((l) => [l.slice(0, l.indexOf(" ")), l.slice(l.indexOf(" ") + 1)]),
  );
  expect(lines["select"]).toBe(`OK ${e.visible.length}`);
  expect(lines["search"]).toBe(e.visible.map((_, i) => i + 1).join(" "));
  expect(lines["uidsearch"]).toBe(e.visibleUids.join(" "));
  expect(lines["fetch"]).toBe(e.visibleUids.map((u, i) => `${i + 1} (UID ${u})`).join(" "));
  expect(lines["hidden"]).toBe("OK [None]");
});

test("curl: a visible UID is fetched; a hidden one is not there", async () => {
  const get = (path: string) =>
    new Response(
      Bun.spawn([
        "curl",
        "-s",
        "--max-time",
        "10",
        "-u",
        `${mailbox.user}:${mailbox.password}`,
        `imap://127.0.0.1:${proxy.port}/${path}`,
      ]).stdout,
    ).text();
  const visible = e.visible[7]!;
  expect(await get(`INBOX;UID=${visible.uid}`)).toContain(visible.messageId);
  expect(await get(`INBOX;UID=${e.hidden[7]!.uid}`)).toBe("");
  // curl's ?SEARCH runs SEARCH and prints sequence numbers.
  const search = await get("INBOX?ALL");
  expect(search.trim()).toBe(`* SEARCH ${e.visible.map((_, i) => i + 1).join(" ")}`);
});

test("audit rows: visible and hidden counts, no hidden UIDs, addresses, subjects; cache beside audit log", async () => {
  const rows = await proxy.rows();
  const selects = rows.filter((r) => (r.command === "SELECT" || r.command === "EXAMINE") && r.decision === "allow");
  expect(selects.length).toBeGreaterThan(0);
  for (const r of selects) {
    expect(r.count).toBe(e.visible.length);
    expect(r.hiddenCount).toBe(e.hidden.length);
    expect(r.rule).toBe("Transactional emails from known senders");
  }
  const text = JSON.stringify(rows);
  for (const m of e.hidden) {
    expect(text.includes(m.subject)).toBe(false);
    expect(text.includes(m.messageId)).toBe(false);
  }
  expect(text).not.toContain("evil.test");
  expect(existsSync(join(proxy.dir, "mailgator-cache.db"))).toBe(true);
});
