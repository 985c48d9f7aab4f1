/**
 * Shared by the filtered-mailbox tests: the seed config's rules, a seeded mailbox, and what the agent must see,
 * computed from the seeder's manifest (never from the proxy).
 */
import { expect } from "bun:test";
import { type SeededMessage, upstreams } from "../fixtures/index.ts";
import { TcpRelay } from "../fixtures/tcp-relay.ts";
import { RawImap, statusOf } from "./helpers.ts";

/** The seed config's rules (README.md "Rules"), verbatim. */
export const SEED_RULES = `[[rules]]
name = "Transactional emails from known senders"
folders = ["INBOX"]
from = "notifications@*"
action = "allow"
operations = ["read"]

[[rules]]
name = "Deny everything else"
action = "deny"
`;

/** The seed rule over INBOX, a folder of the agent's own (`Own`) in full, and nothing else. */
export const FILTERED_INBOX_AND_OWN_RULES = `
[[rules]]
name = "filtered inbox"
folders = ["INBOX"]
from = "notifications@*"
action = "allow"
operations = ["read"]

[[rules]]
name = "own"
folders = ["Own"]
action = "allow"

[[rules]]
name = "nothing else"
action = "deny"
`;

/** MOVE out of INBOX, before the filtered INBOX (read) and the agent's own folder (everything). */
export const INBOX_MOVES_RULES = `
[[rules]]
name = "inbox moves"
folders = ["INBOX"]
action = "allow"
operations = ["mail:move"]
${FILTERED_INBOX_AND_OWN_RULES}`;

export interface Expected {
  readonly visible: readonly SeededMessage[];
  readonly hidden: readonly SeededMessage[];
  readonly visibleUids: readonly number[];
  readonly hiddenUids: ReadonlySet<number>;
}

/** The seed rule over a manifest: From's addr-spec starts with notifications@ (display names never count). */
export function expected(messages: readonly SeededMessage[]): Expected {
  const visible = messages.filter((m) => m.from.startsWith("notifications@"));
  const hidden = messages.filter((m) => !m.from.startsWith("notifications@"));
  return { visible, hidden, visibleUids: visible.map((m) => m.uid), hiddenUids: new Set(hidden.map((m) => m.uid)) };
}

/**
 * Asserts that nothing of a hidden message is in `bytes` (everything the agent received): no Message-ID, no subject
 * that no visible message shares, no hidden UID after `UID`, in a SEARCH result of a UID command, or in COPYUID.
 */
export function expectNoLeak(bytes: string, e: Expected, options: { uidSearch?: boolean } = {}): void {
  const visibleSubjects = new Set(e.visible.map((m) => m.subject));
  for (const m of e.hidden) {
    expect(bytes.includes(m.messageId)).toBe(false);
    if (!visibleSubjects.has(m.subject) && m.subject.length > 8) expect(bytes.includes(m.subject)).toBe(false);
  }
  for (const match of bytes.matchAll(/\bUID (\d+)/g)) expect(e.hiddenUids.has(Number(match[1]))).toBe(false);
  if (options.uidSearch) {
    for (const line of bytes.split("\r\n")) {
      if (!line.startsWith("* SEARCH")) continue;
      for (const n of line.slice(8).trim().split(" ").filter(Boolean)) expect(e.hiddenUids.has(Number(n))).toBe(false);
    }
  }
  // `[NOMODSEQ]` is a filtered folder's own answer (RFC 7162 §3.1.2.2); no mod-sequence or VANISHED reaches it.
  expect(bytes).not.toMatch(/\bMODSEQ\b|VANISHED|HIGHESTMODSEQ/);
}

/** `* n FETCH (... UID u ...)` pairs in order. */
export function fetchedUids(bytes: string): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (const m of bytes.matchAll(/\* (\d+) FETCH \([^\r\n]*?\bUID (\d+)/g)) out.push([Number(m[1]), Number(m[2])]);
  return out;
}

/** A message for APPEND: `from` decides its visibility under the seed rule. */
export function rawMessage(from: string, subject: string, id: string): string {
  return [
    `From: ${from}`,
    "To: me@mailgator.test",
    `Subject: ${subject}`,
    `Message-ID: <${id}@filtered.test>`,
    "Date: Mon, 23 Nov 2026 10:00:00 +0000",
    "",
    `Body of ${subject}`,
    "",
  ].join("\r\n");
}

/**
 * Logs in to the proxy on `port` as `account` and checks that its INBOX holds exactly the UIDs `shown`, in a FETCH and
 * a SEARCH, and that no UID of `hidden` answers a FETCH.
 */
export async function expectInboxShows(
  port: number,
  account: { readonly user: string; readonly password: string },
  shown: readonly number[],
  hidden: readonly number[],
): Promise<void> {
  const raw = await RawImap.login(port, account);
  await raw.command("s", "EXAMINE INBOX");
  const reply = await raw.command("f", "UID FETCH 1:* (UID)");
  expect(statusOf(reply, "f")).toStartWith("f OK");
  expect(fetchedUids(reply).map(([, uid]) => uid)).toEqual([...shown]);
  const search = await raw.command("q", "UID SEARCH ALL");
  expect(search).toContain(`* SEARCH ${shown.join(" ")}\r\n`);
  for (const uid of hidden) expect((await raw.command("h", `UID FETCH ${uid} (UID)`)).includes("FETCH (")).toBe(false);
  raw.close();
}

/** A relay between the proxy and Dovecot's plain port that can hold back the proxy's next classification. */
export interface ClassificationRelay {
  readonly relay: TcpRelay;
  /**
   * The proxy's next classification FETCH (`UID FETCH … (UID BODY.PEEK[HEADER.FIELDS …`, docs/filtering.md
   * "Updates") waits at the relay until `hook` has run (once); `onReply` sees what Dovecot sends until that FETCH's
   * tagged reply.
   */
  holdNext(hook: () => Promise<unknown>, onReply?: (text: string) => void): void;
}

export async function classificationRelay(): Promise<ClassificationRelay> {
  const up = upstreams();
  let held: { hook: () => Promise<unknown>; onReply: ((text: string) => void) | undefined } | null = null;
  let watching: ((text: string) => void) | null = null;
  const relay = await TcpRelay.start({ host: up.host, port: up.ports.imap }, () => ({
    fromClient: (chunk, link) => {
      const next = held;
      if (next !== null && /^\S+ UID FETCH \S+ \(UID BODY\.PEEK\[HEADER\.FIELDS/.test(chunk.toString("latin1"))) {
        held = null;
        watching = next.onReply ?? null;
        void next.hook().then(() => link.target.write(chunk));
        return;
      }
      link.target.write(chunk);
    },
    fromTarget: (chunk, link) => {
      if (watching !== null) {
        const text = chunk.toString("latin1");
        watching(text);
        if (/\r\n\S+ (OK|NO|BAD)/.test(`\r\n${text}`)) watching = null;
      }
      link.client.write(chunk);
    },
  }));
  return { relay, holdNext: (hook, onReply) => void (held = { hook, onReply }) };
}
