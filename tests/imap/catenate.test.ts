/**
 * CATENATE (RFC 4469) through the proxy, against the real Dovecot:
 * - allow-all: every message the proxy assembles is the message Dovecot's own CATENATE makes of the same parts
 *   (TEXT, whole messages, HEADER, TEXT, MIME parts, HEADER.FIELDS, partial ranges), and a URL Dovecot refuses is
 *   refused too;
 * - filtered: a URL naming a hidden message, a hidden folder, another folder or nothing selected gets
 *   `NO [BADURL url]`, the same as a message that does not exist, and nothing is appended;
 * - the limits: MAX_CATENATE_URLS URL parts, and the sizes of an APPEND literal (MAX_APPEND_MESSAGE per message,
 *   MAX_COMMAND_BYTES per command), each at the limit and one past it.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { MAX_APPEND_MESSAGE, MAX_CATENATE_URLS, MAX_COMMAND_BYTES } from "../../src/imap/limits.ts";
import { connectImap, createMailbox, type TestMailbox, upstreams } from "../fixtures/index.ts";
import { auditCursor, RawImap, startTestProxy, statusOf, type TestProxy, upstreamState } from "./helpers.ts";

const RULES = `
[[rules]]
name = "shop mail"
folders = ["INBOX", "Archive"]
from = "*@shop.test"
action = "allow"
operations = ["read"]

[[rules]]
name = "drafts"
folders = ["Drafts"]
action = "allow"
operations = ["read", "mail:append"]

[[rules]]
name = "nothing else"
action = "deny"
`;

const PLAN = "From: ann@shop.test\r\nSubject: Plan\r\nTo: agent@t.test\r\n\r\nHello, this is the plan.\r\n";
const MULTIPART = [
  "From: bob@shop.test",
  "Subject: Parts",
  "MIME-Version: 1.0",
  'Content-Type: multipart/mixed; boundary="b1"',
  "",
  "--b1",
  "Content-Type: text/plain",
  "",
  "First part.",
  "--b1",
  "Content-Type: text/plain",
  "",
  "Second part.",
  "--b1--",
  "",
].join("\r\n");
const SECRET = "From: eve@evil.test\r\nSubject: Secret\r\n\r\nThe hidden body.\r\n";
/** A message of exactly MAX_APPEND_MESSAGE / 25 octets. */
const BIG_SIZE = MAX_APPEND_MESSAGE / 25;

let mailbox: TestMailbox;
let allowAll: TestProxy;
let filtered: TestProxy;
/** INBOX UIDs: the plan, the multipart message, the hidden one; INBOX's UIDVALIDITY. */
let plan: number;
let parts: number;
let secret: number;
let uidValidity: number;

const text = (s: string): string => `TEXT {${Buffer.byteLength(s)}+}\r\n${s}`;
const url = (u: string): string => `URL "${u}"`;
const cat = (...p: string[]): string => `CATENATE (${p.join(" ")})`;

beforeAll(async () => {
  mailbox = await createMailbox();
  const client = await connectImap(mailbox);
  await client.append("INBOX", PLAN);
  await client.append("INBOX", MULTIPART);
  await client.append("INBOX", SECRET);
  for (const f of ["Secret", "DirectOut", "ProxyOut", "Big"]) await client.mailboxCreate(f);
  await client.append("Secret", PLAN);
  await client.append("Archive", PLAN);
  const big = `From: ann@shop.test\r\nSubject: big\r\n\r\n`;
  await client.append("Big", big + "x".repeat(BIG_SIZE - big.length - 2) + "\r\n");
  const box = await client.mailboxOpen("INBOX", { readOnly: true });
  uidValidity = Number(box.uidValidity);
  const uids: number[] = [];
  for await (const m of client.fetch("1:*", { uid: true })) uids.push(m.uid);
  [plan, parts, secret] = uids as [number, number, number];
  await client.logout();
  allowAll = await startTestProxy();
  filtered = await startTestProxy({ rules: RULES });
});

afterAll(async () => {
  await allowAll?.close();
  await filtered?.close();
});

/** Every message of `folder`, whole, read directly from Dovecot. */
async function bodies(folder: string): Promise<string[]> {
  const client = await connectImap(mailbox);
  try {
    const box = await client.mailboxOpen(folder, { readOnly: true });
    const out: string[] = [];
    if (box.exists > 0) for await (const m of client.fetch("1:*", { source: true })) out.push(m.source!.toString());
    return out;
  } finally {
    await client.logout();
  }
}

async function count(folder: string): Promise<number> {
  return (await bodies(folder)).length;
}

describe("allow-all: the proxy assembles what Dovecot assembles", () => {
  test("CAPABILITY offers CATENATE after login", async () => {
    const raw = await RawImap.login(allowAll.port, mailbox);
    expect((await raw.command("c", "CAPABILITY")).split("\r\n")[0]!.split(" ")).toContain("CATENATE");
    raw.close();
  });

  test("TEXT, whole messages, sections and partial ranges give Dovecot's message, and set no \\Seen", async () => {
    const specs = [
      cat(text("From: a@shop.test\r\n\r\n"), text("Two literals, one message.\r\n")),
      cat(url(`/INBOX/;UID=${plan}`)),
      cat(url(`/INBOX/;UID=${plan}/;SECTION=HEADER`), text("A new body.\r\n")),
      cat(text("X-New: 1\r\n"), url(`/INBOX/;UID=${parts}/;SECTION=1.MIME`), url(`/INBOX/;UID=${parts}/;SECTION=2`)),
      cat(url(`/inbox;UIDVALIDITY=${uidValidity}/;uid=${parts}/;section=text`)),
      cat(url(`/INBOX/;UID=${plan}/;PARTIAL=6.20`), text("\r\n")),
      cat(url(`/INBOX/;UID=${plan}/;PARTIAL=30`)),
      cat(url(`/INBOX/;UID=${plan}/;SECTION=HEADER.FIELDS%20(SUBJECT%20TO)`), text("Fields.\r\n")),
      cat(url(`/INBOX/;UID=${plan}/;PARTIAL=100000.1`), text("Hdr: y\r\n\r\nnothing from the URL\r\n")),
    ];
    const direct = await RawImap.login(upstreams().ports.imap, mailbox);
    const proxied = await RawImap.login(allowAll.port, mailbox);
    for (const r of [direct, proxied]) expect(statusOf(await r.command("s", "EXAMINE INBOX"), "s")).toStartWith("s OK");
    for (const [i, spec] of specs.entries()) {
      expect(statusOf(await direct.command(`d${i}`, `APPEND DirectOut ${spec}`), `d${i}`)).toStartWith(`d${i} OK`);
      expect(statusOf(await proxied.command(`p${i}`, `APPEND ProxyOut ${spec}`), `p${i}`)).toStartWith(`p${i} OK`);
    }
    const want = await bodies("DirectOut");
    expect(want).toHaveLength(specs.length);
    expect(await bodies("ProxyOut")).toEqual(want);
    // The sources were read with PEEK: the plan is still unseen.
    const flags = await proxied.command("f", `UID FETCH ${plan} (FLAGS)`);
    expect(flags).not.toContain("\\Seen");
    direct.close();
    proxied.close();
  });

  test("Python's imaplib: a CATENATE of two URL parts makes the message it makes directly", async () => {
    // imaplib has no CATENATE of its own; its raw command path sends the arguments as they are.
    const script = `
import imaplib, sys
c = imaplib.IMAP4("127.0.0.1", int(sys.argv[1]))
c.login(sys.argv[2], sys.argv[3])
c.select("INBOX", readonly=True)
parts = 'CATENATE (URL "/INBOX/;UID=%s/;SECTION=HEADER" URL "/INBOX/;UID=%s/;SECTION=TEXT")' % tuple(sys.argv[5:7])
typ, data = c._simple_command("APPEND", sys.argv[4], parts)
print("append", typ)
typ, data = c.select(sys.argv[4], readonly=True)
typ, data = c.fetch(data[0].decode(), "(BODY.PEEK[])")
print(data[0][1].decode())
c.logout()
`;
    const run = (port: number, folder: string) =>
      new Response(
        Bun.spawn([
          "/usr/bin/python3",
          "-c",
          script,
          String(port),
          mailbox.user,
          mailbox.password,
          folder,
          `${plan}`,
          `${parts}`,
        ]).stdout,
      ).text();
    const direct = await run(upstreams().ports.imap, "DirectOut");
    const proxied = await run(allowAll.port, "ProxyOut");
    expect(direct).toStartWith("append OK\nFrom: ann@shop.test");
    expect(direct).toContain("--b1");
    expect(proxied).toBe(direct);
  });

  test("a URL Dovecot refuses is refused with BADURL, and a missing destination is TRYCREATE first", async () => {
    const direct = await RawImap.login(upstreams().ports.imap, mailbox);
    const proxied = await RawImap.login(allowAll.port, mailbox);
    for (const r of [direct, proxied]) await r.command("s", "EXAMINE INBOX");
    const bad = [
      `/INBOX;UIDVALIDITY=${uidValidity + 1}/;UID=${plan}`,
      "/INBOX/;UID=99999",
      `/INBOX/;UID=${plan}/;SECTION=HEADER.FIELDS`,
    ];
    const before = await count("ProxyOut");
    for (const [i, u] of bad.entries()) {
      const spec = cat(text("Hdr: 1\r\n\r\n"), url(u));
      expect(statusOf(await direct.command(`d${i}`, `APPEND DirectOut ${spec}`), `d${i}`)).toStartWith(`d${i} NO`);
      expect(statusOf(await proxied.command(`p${i}`, `APPEND ProxyOut ${spec}`), `p${i}`)).toStartWith(
        `p${i} NO [BADURL ${u}]`,
      );
    }
    const missing = `APPEND NoSuchFolder ${cat(url(`/INBOX;UIDVALIDITY=1/;UID=${plan}`))}`;
    expect(statusOf(await direct.command("m", missing), "m")).toStartWith("m NO [TRYCREATE]");
    expect(statusOf(await proxied.command("m", missing), "m")).toStartWith("m NO [TRYCREATE]");
    expect(await count("ProxyOut")).toBe(before);
    direct.close();
    proxied.close();
  });
  test("a folder whose name is not ASCII, or holds '&', is named in the URL as Dovecot reads it (UTF-8)", async () => {
    const client = await connectImap(mailbox);
    for (const f of ["Café", "A&B", "DirectNames", "ProxyNames"]) await client.mailboxCreate(f);
    await client.append("Café", PLAN);
    await client.append("A&B", PLAN);
    await client.logout();
    const direct = await RawImap.login(upstreams().ports.imap, mailbox);
    const proxied = await RawImap.login(allowAll.port, mailbox);
    // On the wire the names are modified UTF-7 (RFC 3501 §5.1.3); in a URL, UTF-8 percent-encoded (RFC 5092 §3.3).
    const cases: [string, string, boolean][] = [
      ['"Caf&AOk-"', "/Caf%C3%A9/;UID=1", true],
      ['"A&-B"', "/A&B/;UID=1", true],
      ['"A&-B"', "/A%26B/;UID=1/;SECTION=TEXT", true],
      ['"Caf&AOk-"', "/Caf&AOk-/;UID=1", false],
      ['"A&-B"', "/A&-B/;UID=1", false],
    ];
    for (const [i, [folder, u, ok]] of cases.entries()) {
      for (const r of [direct, proxied])
        expect(statusOf(await r.command("s", `EXAMINE ${folder}`), "s")).toStartWith("s OK");
      const want = ok ? "OK" : `NO [BADURL ${u}]`;
      const spec = cat(url(u));
      expect(statusOf(await direct.command(`d${i}`, `APPEND DirectNames ${spec}`), `d${i}`)).toStartWith(
        `d${i} ${want}`,
      );
      expect(statusOf(await proxied.command(`p${i}`, `APPEND ProxyNames ${spec}`), `p${i}`)).toStartWith(
        `p${i} ${want}`,
      );
    }
    const made = await bodies("DirectNames");
    expect(made).toHaveLength(3);
    expect(await bodies("ProxyNames")).toEqual(made);
    direct.close();
    proxied.close();
  });
});

describe("filtered: a URL reaches only what the agent can read", () => {
  test("a hidden message gets the reply of a nonexistent one, with a deny row, and nothing is appended", async () => {
    const rows = auditCursor(filtered);
    await rows();
    const raw = await RawImap.login(filtered.port, mailbox);
    expect(statusOf(await raw.command("s", "EXAMINE INBOX"), "s")).toStartWith("s OK");
    const before = await upstreamState(mailbox);
    const hidden = statusOf(await raw.command("h", `APPEND Drafts ${cat(url(`/INBOX/;UID=${secret}`))}`), "h");
    const none = statusOf(await raw.command("h", `APPEND Drafts ${cat(url("/INBOX/;UID=99999"))}`), "h");
    expect(hidden).toBe(`h NO [BADURL /INBOX/;UID=${secret}] CATENATE URL cannot be used`);
    expect(none).toBe(hidden.replace(String(secret), "99999"));
    // A URL of the hidden message inside a MULTIAPPEND refuses the whole command.
    const second = cat(text("X: 1\r\n\r\n"), url(`/INBOX/;UID=${secret}/;SECTION=TEXT`));
    const multi = `APPEND Drafts ${cat(url(`/INBOX/;UID=${plan}`))} ${second}`;
    expect(statusOf(await raw.command("m", multi), "m")).toStartWith("m NO [BADURL");
    expect(await upstreamState(mailbox)).toEqual(before);
    const denied = (await rows()).filter((r) => r.decision === "deny");
    // A URL naming the hidden message is a probe (docs/filtering.md "Probes"): its own row, with the rule that hid
    // it; the nonexistent UID is none.
    expect(denied.map((r) => [r.command, r.operation, r.target, r.hiddenCount ?? null, r.rule])).toEqual([
      ["APPEND", "mail:read", `UID ${secret}`, 1, "nothing else"],
      ["APPEND", "mail:read", `/INBOX/;UID=${secret}`, null, null],
      ["APPEND", "mail:read", "/INBOX/;UID=99999", null, null],
      ["APPEND", "mail:read", `UID ${secret}`, 1, "nothing else"],
      ["APPEND", "mail:read", `/INBOX/;UID=${secret}/;SECTION=TEXT`, null, null],
    ]);
    expect(denied[1]!.reason).toContain("names no message of the agent's view");
    raw.close();
  });

  test("a hidden folder, another folder and no selected folder all get BADURL", async () => {
    const raw = await RawImap.login(filtered.port, mailbox);
    const before = await upstreamState(mailbox);
    const unselected = statusOf(await raw.command("a", `APPEND Drafts ${cat(url(`/INBOX/;UID=${plan}`))}`), "a");
    expect(unselected).toBe(`a NO [BADURL /INBOX/;UID=${plan}] CATENATE URL cannot be used`);
    expect(statusOf(await raw.command("s", "EXAMINE INBOX"), "s")).toStartWith("s OK");
    for (const u of ["/Secret/;UID=1", "/Archive/;UID=1", "/Nowhere/;UID=1", "imap://x@localhost/INBOX/;UID=1"]) {
      const reply = statusOf(await raw.command("b", `APPEND Drafts ${cat(text("A: b\r\n\r\n"), url(u))}`), "b");
      expect(reply).toBe(`b NO [BADURL ${u}] CATENATE URL cannot be used`);
    }
    expect(await upstreamState(mailbox)).toEqual(before);
    raw.close();
  });

  test("a visible message's part is appended, with one mail:read row for the URLs", async () => {
    const rows = auditCursor(filtered);
    await rows();
    const raw = await RawImap.login(filtered.port, mailbox);
    await raw.command("s", "EXAMINE INBOX");
    const before = await bodies("Drafts");
    const spec = cat(
      url(`/INBOX/;UID=${plan}/;SECTION=HEADER`),
      text("Mine.\r\n"),
      url(`/INBOX/;UID=${parts}/;SECTION=1`),
    );
    expect(statusOf(await raw.command("a", `APPEND Drafts ${spec}`), "a")).toStartWith("a OK");
    const header = PLAN.slice(0, PLAN.indexOf("\r\n\r\n") + 4);
    expect(await bodies("Drafts")).toEqual([...before, `${header}Mine.\r\nFirst part.`]);
    const read = (await rows()).filter((r) => r.operation === "mail:read" && r.command === "APPEND");
    expect(read.map((r) => [r.decision, r.target, r.count])).toEqual([["allow", "CATENATE: 2 URL parts", 2]]);
    raw.close();
  });
});

describe("limits", () => {
  test(`MAX_CATENATE_URLS (${MAX_CATENATE_URLS}) URL parts are assembled; one more is BAD`, async () => {
    const raw = await RawImap.login(allowAll.port, mailbox);
    await raw.command("s", "EXAMINE INBOX");
    const one = url(`/INBOX/;UID=${plan}/;SECTION=TEXT`);
    const before = await count("ProxyOut");
    const at = `APPEND ProxyOut ${cat(...Array(MAX_CATENATE_URLS).fill(one))}`;
    expect(statusOf(await raw.command("a", at), "a")).toStartWith("a OK");
    const all = await bodies("ProxyOut");
    expect(all).toHaveLength(before + 1);
    expect(all.at(-1)).toBe("Hello, this is the plan.\r\n".repeat(MAX_CATENATE_URLS));
    const past = `APPEND ProxyOut ${cat(...Array(MAX_CATENATE_URLS + 1).fill(one))}`;
    expect(statusOf(await raw.command("b", past), "b")).toStartWith("b BAD");
    expect(await count("ProxyOut")).toBe(before + 1);
    raw.close();
  });

  test("MAX_APPEND_MESSAGE octets are assembled; one more, or a command past MAX_COMMAND_BYTES: TOOBIG", async () => {
    const raw = await RawImap.login(allowAll.port, mailbox);
    expect(statusOf(await raw.command("s", "EXAMINE Big"), "s")).toStartWith("s OK");
    const big = url("/Big/;UID=1");
    const full = Array(25).fill(big);
    expect(statusOf(await raw.command("a", `APPEND Big ${cat(...full)}`), "a")).toStartWith("a OK");
    const sizes = await raw.command("z", "FETCH 2 (RFC822.SIZE)");
    expect(sizes).toContain(`RFC822.SIZE ${MAX_APPEND_MESSAGE}`);
    expect(statusOf(await raw.command("b", `APPEND Big ${cat(...full, text("x"))}`), "b")).toStartWith("b NO [TOOBIG]");
    const rest = MAX_COMMAND_BYTES - MAX_APPEND_MESSAGE;
    const second = cat(text("y".repeat(rest + 1)));
    expect(statusOf(await raw.command("c", `APPEND Big ${cat(...full)} ${second}`), "c")).toStartWith("c NO [TOOBIG]");
    expect(await count("Big")).toBe(2);
    raw.close();
  }, 120_000);

  test("a plain literal message after a CATENATE one counts towards MAX_COMMAND_BYTES too: TOOBIG", async () => {
    const raw = await RawImap.login(allowAll.port, mailbox);
    expect(statusOf(await raw.command("s", "EXAMINE Big"), "s")).toStartWith("s OK");
    const before = await count("Big");
    const full = cat(...Array(25).fill(url("/Big/;UID=1")));
    const rest = MAX_COMMAND_BYTES - MAX_APPEND_MESSAGE;
    const literal = (n: number): string => `{${n}+}\r\n${"z".repeat(n)}`;
    // The literal before the CATENATE message or after it: the same command, the same octets, the same answer.
    for (const [i, args] of [`${literal(rest + 1)} ${full}`, `${full} ${literal(rest + 1)}`].entries()) {
      expect(statusOf(await raw.command(`b${i}`, `APPEND Big ${args}`), `b${i}`)).toStartWith(`b${i} NO [TOOBIG]`);
    }
    expect(await count("Big")).toBe(before);
    raw.close();
  }, 120_000);
});
