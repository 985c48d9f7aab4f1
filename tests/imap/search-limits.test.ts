/**
 * SEARCH, SORT and THREAD sets against the real Dovecot (commands/search.ts, docs/imap.md "Decisions"): searches
 * with many or long sequence and UID sets answer exactly as Dovecot answers them directly, up to MAX_SEARCH_SETS
 * sets and MAX_SEARCH_NESTED_RANGES upstream ranges from sets inside NOT or OR; one past either limit gets
 * `NO [LIMIT]` and a deny row. The cost of the sets themselves: search-criteria.test.ts.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { MAX_SEARCH_NESTED_RANGES, MAX_SEARCH_SETS, UPSTREAM_SET_RANGES } from "../../src/imap/limits.ts";
import { createMailbox, type TestMailbox, upstreams } from "../fixtures/index.ts";
import { auditCursor, RawImap, recordWrites, startTestProxy, statusOf, type TestProxy } from "./helpers.ts";

const MESSAGES = 2100;

let proxy: TestProxy;
let mailbox: TestMailbox;
let agent: RawImap;
let direct: RawImap;
let newRows: ReturnType<typeof auditCursor>;

beforeAll(async () => {
  mailbox = await createMailbox({ seed: { folders: { INBOX: MESSAGES }, seed: 41 } });
  proxy = await startTestProxy();
  newRows = auditCursor(proxy);
  agent = await RawImap.login(proxy.port, mailbox);
  expect(await agent.command("s", "EXAMINE INBOX")).toContain(`* ${MESSAGES} EXISTS`);
  direct = await RawImap.open(upstreams().ports.imaps, { tls: true });
  expect(statusOf(await direct.command("l", `LOGIN "${mailbox.user}" "${mailbox.password}"`), "l")).toStartWith("l OK");
  expect(await direct.command("s", "EXAMINE INBOX")).toContain(`* ${MESSAGES} EXISTS`);
});

afterAll(async () => {
  agent?.close();
  direct?.close();
  await proxy?.close();
});

/** The numbers of a reply's `* SEARCH` line, ascending (Dovecot and the proxy may order them differently). */
function searched(reply: string, tag: string): number[] {
  expect(statusOf(reply, tag)).toStartWith(`${tag} OK`);
  const line = reply.split("\r\n").find((l) => l.startsWith("* SEARCH"));
  expect(line).toBeDefined();
  return line!
    .slice("* SEARCH".length)
    .trim()
    .split(" ")
    .filter(Boolean)
    .map(Number)
    .sort((a, b) => a - b);
}

/** The same command through the proxy and straight to Dovecot: the same messages. */
async function sameAsDovecot(command: string): Promise<number[]> {
  const ours = searched(await agent.command("p", command), "p");
  expect(ours).toEqual(searched(await direct.command("d", command), "d"));
  return ours;
}

function keys(n: number, key: string): string {
  return Array.from({ length: n }, () => key).join(" ");
}

/** UIDs 1, 3, 5, ...: with the even ones present, each is one upstream range. */
function odd(n: number): string {
  return Array.from({ length: n }, (_, i) => 2 * i + 1).join(",");
}

test("large searches answer as Dovecot does: long sets applied locally, short ones upstream", async () => {
  expect(await sameAsDovecot("SEARCH 1:*")).toHaveLength(MESSAGES);
  expect(await sameAsDovecot("UID SEARCH UID 1:* UNDELETED")).toHaveLength(MESSAGES);
  expect(await sameAsDovecot("SEARCH 100:1500 1000:2050")).toHaveLength(501);
  expect(await sameAsDovecot("SEARCH 1:1200 (200:2100 5:1999) NOT 300")).toHaveLength(1000);
  expect(await sameAsDovecot("UID SEARCH 2:* UID 1500:* NOT 1800:1900")).toHaveLength(500);
  expect(await sameAsDovecot("SEARCH OR 1:1500 2000:* NOT 7")).toHaveLength(1600);
  expect(await sameAsDovecot("SEARCH 2050:3000 1:*")).toHaveLength(51);
  expect(await sameAsDovecot("SEARCH 3000:* 1:*")).toHaveLength(0);
  // One key holding the most ranges a set may have (MAX_LIST_ITEMS), every one the whole mailbox.
  expect(await sameAsDovecot(`SEARCH ${Array.from({ length: 1024 }, () => "1:*").join(",")}`)).toHaveLength(MESSAGES);
});

test("MAX_SEARCH_SETS sets answer as Dovecot does; one more gets NO [LIMIT] and a deny row", async () => {
  expect(await sameAsDovecot(`SEARCH ${keys(MAX_SEARCH_SETS, "1:*")}`)).toHaveLength(MESSAGES);
  expect(await sameAsDovecot(`SEARCH ${keys(MAX_SEARCH_SETS - 1, "2:*")} NOT 5`)).toHaveLength(MESSAGES - 2);
  await newRows();
  for (const [tag, command] of [
    ["a", `SEARCH ${keys(MAX_SEARCH_SETS + 1, "1:*")}`],
    ["b", `UID SEARCH ${keys(MAX_SEARCH_SETS, "1:*")} NOT UID 5`],
    ["c", `SORT (DATE) UTF-8 ${keys(MAX_SEARCH_SETS + 1, "1:*")}`],
    ["d", `UID THREAD REFERENCES UTF-8 ${keys(MAX_SEARCH_SETS + 1, "1:*")}`],
  ] as const) {
    const reply = await agent.command(tag, command);
    expect(reply).toBe(`${tag} NO [LIMIT] Too many sequence or UID sets in one search (limit ${MAX_SEARCH_SETS})\r\n`);
  }
  const rows = (await newRows()).filter((r) => r.decision === "deny");
  expect(rows.map((r) => [r.command, r.operation, r.folder])).toEqual([
    ["SEARCH", "mail:read", "INBOX"],
    ["UID SEARCH", "mail:read", "INBOX"],
    ["SORT", "mail:read", "INBOX"],
    ["UID THREAD", "mail:read", "INBOX"],
  ]);
  expect(rows[0]!.reason).toBe(`${MAX_SEARCH_SETS + 1} sequence or UID sets in one search (limit ${MAX_SEARCH_SETS})`);
  // The session goes on.
  expect(statusOf(await agent.command("n", "NOOP"), "n")).toStartWith("n OK");
});

test("MAX_SEARCH_NESTED_RANGES ranges inside NOT or OR answer as Dovecot does; one more gets NO [LIMIT]", async () => {
  const at = await sameAsDovecot(`UID SEARCH NOT UID ${odd(MAX_SEARCH_NESTED_RANGES)}`);
  expect(at).toHaveLength(MESSAGES - MAX_SEARCH_NESTED_RANGES);
  await newRows();
  const past = await agent.command("x", `UID SEARCH NOT UID ${odd(MAX_SEARCH_NESTED_RANGES + 1)}`);
  expect(past).toBe(
    `x NO [LIMIT] Too many UID ranges in sets inside NOT, OR or parentheses (limit ${MAX_SEARCH_NESTED_RANGES})\r\n`,
  );
  const rows = (await newRows()).filter((r) => r.decision === "deny");
  expect(rows.map((r) => r.command)).toEqual(["UID SEARCH"]);
  // The same set among the keys that must all match is applied locally, at any length.
  expect(await sameAsDovecot(`UID SEARCH UID ${odd(MAX_SEARCH_NESTED_RANGES + 24)}`)).toHaveLength(
    MAX_SEARCH_NESTED_RANGES + 24,
  );
});

test("a set that names no message inside NOT or OR answers as Dovecot does: no NOT ALL there upstream", async () => {
  // Dovecot 2.3 answers `OR NOT (NOT ALL) NOT ALL` with nothing; sent for sets past the end, as before, the first
  // search found no message where Dovecot, asked it directly, finds all (commands/search.ts `translateKey`).
  const { writes, restore } = recordWrites();
  try {
    expect(await sameAsDovecot("SEARCH OR NOT (3000) 3001")).toHaveLength(MESSAGES);
    expect(await sameAsDovecot("SEARCH OR NOT (3000:3001 2) 3000")).toHaveLength(MESSAGES);
    expect(await sameAsDovecot("UID SEARCH OR NOT (UID 9000) UID 9001 UNDELETED")).toHaveLength(MESSAGES);
    expect(await sameAsDovecot("SEARCH (OR NOT (3000) 3001) 5:9")).toHaveLength(5);
    expect(await sameAsDovecot("SEARCH OR 3000 NOT (3001 5)")).toHaveLength(MESSAGES);
    expect(await sameAsDovecot("SEARCH NOT OR NOT (3000) 3001")).toHaveLength(0);
    expect(await sameAsDovecot("SEARCH OR (3000 UNDELETED) 7")).toEqual([7]);
    const upstream = writes.filter((w) => / UID SEARCH /.test(w));
    expect(upstream).toHaveLength(7);
    // Worked out here: what every message matches is left out, and only a search that matches none says NOT ALL.
    expect(upstream.map((w) => w.slice(w.indexOf(" UID SEARCH ") + 12).trim())).toEqual([
      "ALL",
      "ALL",
      "UNDELETED",
      "UID 5:9",
      "ALL",
      "NOT ALL",
      "UID 7",
    ]);
  } finally {
    restore();
  }
});

test("an unfiltered folder: a long range goes upstream as the range, not as ALL applied locally", async () => {
  // What the proxy writes to Dovecot (the agent's socket gets no SEARCH command).
  const { writes, restore } = recordWrites();
  try {
    // More messages than UPSTREAM_SET_RANGES, in two ranges: both go upstream as they are.
    expect(1900 - 200 + 1).toBeGreaterThan(UPSTREAM_SET_RANGES);
    const found = await sameAsDovecot("UID SEARCH UID 200:1000,1200:1900 NOT DELETED");
    expect(found).toHaveLength(801 + 701);
    const upstream = writes.filter((w) => / UID SEARCH /.test(w));
    expect(upstream).toHaveLength(1);
    expect(upstream[0]).toMatch(/ UID SEARCH UID 200:1000,1200:1900 /);
  } finally {
    restore();
  }
});

test("a filtered folder: a long run of visible messages goes upstream as one range, not as ALL", async () => {
  // A rule on the sender makes INBOX filtered; no seeded message matches it, so all 2,100 stay visible.
  const filtered = await startTestProxy({
    rules: `
[[rules]]
name = "one sender hidden"
folders = ["INBOX"]
from = "nobody@nowhere.invalid"
action = "deny"
operations = ["read"]

[[rules]]
name = "everything else"
action = "allow"
`,
  });
  const raw = await RawImap.login(filtered.port, mailbox);
  try {
    expect(await raw.command("s", "EXAMINE INBOX")).toContain(`* ${MESSAGES} EXISTS`);
    const { writes, restore } = recordWrites();
    let reply: string;
    try {
      reply = await raw.command("p", "UID SEARCH UID 200:1900 NOT DELETED");
    } finally {
      restore();
    }
    const found = searched(reply, "p");
    expect(found).toEqual(searched(await direct.command("d", "UID SEARCH UID 200:1900 NOT DELETED"), "d"));
    // More messages than UPSTREAM_SET_RANGES, but one range: it goes upstream as it is.
    expect(found.length).toBeGreaterThan(UPSTREAM_SET_RANGES);
    const upstream = writes.filter((w) => / UID SEARCH /.test(w));
    expect(upstream).toHaveLength(1);
    expect(upstream[0]).toMatch(/ UID SEARCH UID 200:1900 /);
  } finally {
    raw.close();
    await filtered.close();
  }
});

test("an unknown charset: NO [BADCHARSET (...)] with the supported ones, as Dovecot (RFC 9051 §6.4.4)", async () => {
  for (const [tag, command] of [
    ["c1", "SEARCH CHARSET KOI8-R ALL"],
    ["c2", "UID SORT (DATE) KOI8-R ALL"],
    ["c3", "UID THREAD REFERENCES KOI8-R ALL"],
  ] as const) {
    expect(statusOf(await agent.command(tag, command), tag)).toStartWith(`${tag} NO [BADCHARSET (US-ASCII UTF-8)] `);
  }
  // Dovecot's answer, for comparison (its list of charsets is its own).
  expect(statusOf(await direct.command("d1", "SEARCH CHARSET X-NO-SUCH ALL"), "d1")).toMatch(/^d1 NO \[BADCHARSET/);
});
