/**
 * What goes upstream for a command with a message set must not depend on hidden messages (docs/protocol.md §3
 * "UID sets sent upstream"), against Dovecot: two users with the same 300 visible messages, where the other 300
 * (hidden by the rules, one between each two visible ones) are still there for one user and expunged for the
 * other. Padded up to Dovecot's 64 KiB command line, a SEARCH, SORT or THREAD answered OK for one and failed for the
 * other, because the set sent upstream broke at each hidden message; and so did a FETCH. Now the search sets are
 * the view's runs, and a FETCH, STORE, COPY or MOVE whose upstream form is longer than UPSTREAM_REST_OCTETS
 * besides its set is refused the same for both.
 */

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { UPSTREAM_REST_OCTETS } from "../../src/imap/limits.ts";
import { createMailbox, type TestMailbox } from "../fixtures/index.ts";
import { RawImap, startTestProxy, statusOf, type TestProxy } from "./helpers.ts";

const VISIBLE = 300;
const RULES = `
[[rules]]
name = "elsewhere hidden"
folders = ["INBOX"]
from = "*@elsewhere.test"
action = "deny"
operations = ["read"]

[[rules]]
name = "everything else"
action = "allow"
`;

let kept: TestMailbox;
let expunged: TestMailbox;
let filtered: TestProxy;
const proxies: TestProxy[] = [];

/** VISIBLE messages from corp.test, each followed by a hidden one: UIDs 1, 3, 5, ... visible. */
async function fill(p: TestProxy, mailbox: TestMailbox): Promise<void> {
  const c = await RawImap.login(p.port, mailbox);
  let out = "";
  for (let i = 0; i < 2 * VISIBLE; i++) {
    const from = i % 2 === 0 ? `a${i}@corp.test` : `x${i}@elsewhere.test`;
    const text = `From: ${from}\r\nTo: me@corp.test\r\nSubject: message ${i}\r\n\r\nbody ${i}\r\n`;
    out += `A${i} APPEND INBOX {${text.length}+}\r\n${text}\r\n`;
  }
  c.write(out);
  expect(statusOf(await c.waitTagged(`A${2 * VISIBLE - 1}`), `A${2 * VISIBLE - 1}`)).toContain(" OK ");
  c.close();
}

beforeAll(async () => {
  const all = await startTestProxy({});
  proxies.push(all);
  kept = await createMailbox({ name: "set-length-kept" });
  expunged = await createMailbox({ name: "set-length-expunged" });
  await fill(all, kept);
  await fill(all, expunged);
  const c = await RawImap.login(all.port, expunged);
  expect(statusOf(await c.command("S", "SELECT INBOX"), "S")).toStartWith("S OK");
  const hidden = Array.from({ length: VISIBLE }, (_, i) => 2 * i + 2).join(",");
  expect(statusOf(await c.command("F", `UID STORE ${hidden} +FLAGS.SILENT (\\Deleted)`), "F")).toStartWith("F OK");
  expect(statusOf(await c.command("E", "EXPUNGE"), "E")).toStartWith("E OK");
  c.close();
  filtered = await startTestProxy({ rules: RULES });
  proxies.push(filtered);
});

afterAll(async () => {
  for (const p of proxies) await p.close();
});

/** The tagged status of `command` for each user, INBOX selected through the filtered proxy. */
async function both(command: string): Promise<[string, string]> {
  const out: string[] = [];
  for (const mailbox of [kept, expunged]) {
    const c = await RawImap.login(filtered.port, mailbox);
    const selected = await c.command("S", "SELECT INBOX");
    expect(selected).toContain(`* ${VISIBLE} EXISTS`);
    const reply = await c.command("X", command);
    out.push(
      statusOf(reply, "X")
        .replace(/^X /, "")
        .replace(/\(\d+\.\d+ \+\d+\.\d+ secs\)\.?/, ""),
    );
    c.close();
  }
  return out as [string, string];
}

/** `NOT SUBJECT "zz..."` keys, ANDed, of exactly `octets` octets: keys that change nothing but the length. */
function pad(octets: number): string {
  const key = (n: number) => ` NOT SUBJECT "${"z".repeat(n)}"`;
  const whole = key(990);
  let out = whole.repeat(Math.floor(octets / whole.length) - 1);
  out += key(octets - out.length - key(0).length);
  expect(out.length).toBe(octets);
  return out;
}

describe("a padded command answers the same whether hidden messages are still there or expunged", () => {
  test("SEARCH, SORT and THREAD over 1:* with 64,900 octets of keys", async () => {
    for (const command of [
      `UID SEARCH 1:*${pad(64_900)}`,
      `UID SORT (ARRIVAL) UTF-8 1:*${pad(64_900)}`,
      `UID THREAD REFERENCES UTF-8 1:*${pad(64_900)}`,
    ]) {
      const [a, b] = await both(command);
      expect(a, command.slice(0, 30)).toBe(b);
      expect(a).toStartWith("OK");
    }
  });

  test("a FETCH whose items pass UPSTREAM_REST_OCTETS is refused for both; one within it answered", async () => {
    // Names of 199 octets and a space: 200 octets a name (a list holds at most MAX_LIST_ITEMS).
    const fields = (n: number) =>
      Array.from({ length: n }, (_, i) => `X-F${String(i).padStart(6, "0")}${"a".repeat(190)}`).join(" ");
    const over = `UID FETCH 1:* (BODY.PEEK[HEADER.FIELDS (${fields(Math.ceil(UPSTREAM_REST_OCTETS / 200) + 2)})])`;
    const [a, b] = await both(over);
    expect(a).toBe(b);
    expect(a).toStartWith("NO [LIMIT]");
    const within = `UID FETCH 1:* (BODY.PEEK[HEADER.FIELDS (${fields(Math.floor(UPSTREAM_REST_OCTETS / 200) - 2)})])`;
    const [c, d] = await both(within);
    expect(c).toBe(d);
    expect(c).toStartWith("OK");
  });
});

test("the upstream form at UPSTREAM_REST_OCTETS and one past it; none in an unfiltered folder", async () => {
  // `M1 UID FETCH 1 (BODY.PEEK[HEADER.FIELDS (...)] UID)\r\n` as the proxy writes it (src/imap/wire/serialize.ts):
  // the fields list is what the test sizes.
  const fixed = "A UID FETCH 1 (BODY.PEEK[HEADER.FIELDS ()] UID)\r\n".length;
  const list = (octets: number) => {
    const names: string[] = [];
    let length = -1;
    while (length + 1 + 199 <= octets) {
      names.push(`X-${String(names.length).padStart(7, "0")}${"a".repeat(190)}`);
      length += 200;
    }
    // One name longer makes up the rest.
    if (length < octets) names[names.length - 1] += "Y".repeat(octets - length);
    return names.join(" ");
  };
  const fetch = (octets: number) => `UID FETCH 1:* (BODY.PEEK[HEADER.FIELDS (${list(octets - fixed)})])`;
  const c = await RawImap.login(filtered.port, kept);
  expect(statusOf(await c.command("S", "SELECT INBOX"), "S")).toStartWith("S OK");
  expect(statusOf(await c.command("F", fetch(UPSTREAM_REST_OCTETS)), "F")).toStartWith("F OK");
  expect(statusOf(await c.command("G", fetch(UPSTREAM_REST_OCTETS + 1)), "G")).toStartWith("G NO [LIMIT]");
  c.close();
  const rows = (await filtered.rows()).filter(
    (r) => r.decision === "deny" && r.reason.includes("besides its message set"),
  );
  expect(rows.length).toBeGreaterThan(0);
  const open = proxies[0]!;
  const u = await RawImap.login(open.port, kept);
  expect(statusOf(await u.command("S", "SELECT INBOX"), "S")).toStartWith("S OK");
  expect(statusOf(await u.command("G", fetch(UPSTREAM_REST_OCTETS + 1)), "G")).toStartWith("G OK");
  u.close();
});
