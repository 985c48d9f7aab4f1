/**
 * ESEARCH (RFC 4731), SORT and ESORT (RFC 5256 §3, RFC 5267 §3.2) and THREAD (RFC 5256 §4) through the proxy,
 * against the real Dovecot:
 * - allow-all: every answer equals Dovecot's own over the same folder (raw IMAP, and imapflow for ESEARCH);
 * - filtered: every answer over a folder with hidden messages equals Dovecot's answer over a second folder seeded
 *   with the visible messages only, in the same order (hidden replies, hidden thread roots, a hidden message sharing
 *   a visible one's subject, a hidden end of a reference loop, the biggest and the earliest message hidden).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { ImapFlow } from "imapflow";
import { connectImap, createMailbox, type TestMailbox, upstreams } from "../fixtures/index.ts";
import { proxyClient, RawImap, startTestProxy, statusOf, type TestProxy } from "./helpers.ts";

/** Visible under RULES: From is at shop.test. */
const RULES = `[[rules]]
name = "shop mail"
folders = ["INBOX"]
from = "*@shop.test"
action = "allow"
operations = ["read"]

[[rules]]
name = "Deny everything else"
action = "deny"
`;

interface Spec {
  readonly from: string;
  readonly subject: string;
  readonly id: string;
  readonly date: string;
  /** INTERNALDATE given to APPEND. */
  readonly arrival: string;
  readonly refs?: string;
  readonly inReplyTo?: string;
  readonly body?: string;
}

const hidden = (s: Spec): boolean => !s.from.endsWith("@shop.test>") && !s.from.endsWith("@shop.test");

/** INBOX in mailbox order; the evil.test ones are hidden from the agent. */
const MESSAGES: readonly Spec[] = [
  { from: "Ann <ann@shop.test>", subject: "Plan", id: "plan", date: "2 Nov 2026 09:00 +0000", arrival: "2" },
  {
    from: "eve@evil.test",
    subject: "Re: Plan",
    id: "plan-h",
    refs: "<plan@t.test>",
    date: "2 Nov 2026 09:30 +0000",
    arrival: "3",
  },
  {
    from: "bob@shop.test",
    subject: "Re: Plan",
    id: "plan-v",
    refs: "<plan@t.test> <plan-h@t.test>",
    date: "2 Nov 2026 10:00 +0000",
    arrival: "4",
  },
  {
    from: "Eve <eve@evil.test>",
    subject: "Budget",
    id: "budget",
    date: "1 Nov 2026 08:00 +0000",
    arrival: "1",
    body: "The biggest message of all. ".repeat(60),
  },
  {
    from: "carol@shop.test",
    subject: "Re: Budget",
    id: "budget-1",
    refs: "<budget@t.test>",
    date: "3 Nov 2026 09:00 +0000",
    arrival: "5",
  },
  {
    from: "Zed <zed@shop.test>",
    subject: "RE: Budget",
    id: "budget-2",
    inReplyTo: "<budget@t.test>",
    date: "3 Nov 2026 12:00 +0000",
    arrival: "6",
    body: "A longer visible body. ".repeat(10),
  },
  { from: "adam@evil.test", subject: "Lunch", id: "lunch-h", date: "2 Nov 2026 08:00 +0000", arrival: "7" },
  { from: "ann@shop.test", subject: "Re: Lunch", id: "lunch-v", date: "4 Nov 2026 08:00 +0000", arrival: "8" },
  { from: "bob@shop.test", subject: "Loop A", id: "la", refs: "<lb@t.test>", date: "5 Nov 2026 08:00", arrival: "9" },
  { from: "eve@evil.test", subject: "Loop B", id: "lb", refs: "<la@t.test>", date: "5 Nov 2026 07:00", arrival: "10" },
  { from: "Aaron <aaron@evil.test>", subject: "Weekly", id: "weekly-h", date: "6 Nov 2026 09:00", arrival: "11" },
  {
    from: "Zed <zed@shop.test>",
    subject: "Re: Weekly",
    id: "weekly-v",
    refs: "<weekly-h@t.test>",
    date: "6 Nov 2026 10:00",
    arrival: "12",
  },
  { from: "dora@shop.test", subject: "weekly", id: "weekly-2", date: "6 Nov 2026 11:00", arrival: "13" },
];

function render(s: Spec): string {
  const lines = [`From: ${s.from}`, "To: agent@t.test", `Subject: ${s.subject}`, `Message-ID: <${s.id}@t.test>`];
  if (s.refs !== undefined) lines.push(`References: ${s.refs}`);
  if (s.inReplyTo !== undefined) lines.push(`In-Reply-To: ${s.inReplyTo}`);
  lines.push(`Date: ${s.date}`);
  return `${lines.join("\r\n")}\r\n\r\n${s.body ?? `Body of ${s.id}.`}\r\n`;
}

/** Arrival n: n hours into 1 Nov 2026, so ARRIVAL order differs from mailbox order. */
const arrival = (s: Spec): Date => new Date(Date.UTC(2026, 10, 1, (Number(s.arrival) * 7) % 24, Number(s.arrival)));

const SORTS = [
  "(ARRIVAL)",
  "(DATE)",
  "(REVERSE DATE)",
  "(SIZE)",
  "(REVERSE SIZE)",
  "(SUBJECT)",
  "(SUBJECT REVERSE DATE)",
  "(FROM)",
  "(REVERSE FROM DATE)",
  "(DISPLAYFROM)",
  "(TO SIZE)",
];
const CRITERIA = ["ALL", "2:5", "SUBJECT re", "OR FROM eve FROM zed", "1000"];
const ESEARCH = ["(MIN MAX COUNT ALL)", "()", "(COUNT)", "(MAX)", "(MIN ALL)"];

/** SORT, ESORT, THREAD and ESEARCH commands, sequence and UID forms. */
function commands(): string[] {
  const out: string[] = [];
  for (const uid of ["", "UID "]) {
    for (const c of CRITERIA) {
      for (const s of SORTS) out.push(`${uid}SORT ${s} UTF-8 ${c}`);
      for (const r of ESEARCH) out.push(`${uid}SORT RETURN ${r} (SUBJECT DATE) UTF-8 ${c}`);
      for (const r of ESEARCH) out.push(`${uid}SEARCH RETURN ${r} ${c}`);
      out.push(`${uid}SEARCH ${c}`);
      for (const a of ["REFERENCES", "ORDEREDSUBJECT"]) out.push(`${uid}THREAD ${a} UTF-8 ${c}`);
    }
  }
  return out;
}

/**
 * The untagged lines of a reply. Dovecot writes an empty THREAD result as `* THREAD ` with a trailing space; the
 * proxy writes `* THREAD`, as RFC 5256 §5's `thread-data = "THREAD" [SP 1*thread-list]` has it.
 */
function untagged(reply: string): string[] {
  return reply
    .split("\r\n")
    .filter((l) => l.startsWith("* "))
    .map((l) => (l === "* THREAD " ? "* THREAD" : l));
}

let mailbox: TestMailbox;
let allowAll: TestProxy;
let filtered: TestProxy;
/** INBOX's UIDs of the visible messages, in mailbox order; VisibleOnly's UIDs in the same order. */
let inboxVisibleUids: number[];
let visibleOnlyUids: number[];

async function login(port: number): Promise<RawImap> {
  return RawImap.login(port, mailbox);
}

beforeAll(async () => {
  mailbox = await createMailbox();
  const client = await connectImap(mailbox);
  await client.mailboxCreate("VisibleOnly");
  for (const s of MESSAGES) {
    await client.append("INBOX", render(s), [], arrival(s));
    if (!hidden(s)) await client.append("VisibleOnly", render(s), [], arrival(s));
  }
  const uidsOf = async (folder: string, keep: (i: number) => boolean): Promise<number[]> => {
    await client.mailboxOpen(folder, { readOnly: true });
    const out: number[] = [];
    for await (const m of client.fetch("1:*", { uid: true })) if (keep(m.seq - 1)) out.push(m.uid);
    return out;
  };
  inboxVisibleUids = await uidsOf("INBOX", (i) => !hidden(MESSAGES[i]!));
  visibleOnlyUids = await uidsOf("VisibleOnly", () => true);
  await client.logout();
  expect(inboxVisibleUids.length).toBe(MESSAGES.filter((s) => !hidden(s)).length);
  allowAll = await startTestProxy();
  filtered = await startTestProxy({ rules: RULES });
});

afterAll(async () => {
  await allowAll?.close();
  await filtered?.close();
});

describe("allow-all: the proxy answers as Dovecot does", () => {
  test("CAPABILITY offers ESEARCH, SORT, SORT=DISPLAY, ESORT and both THREAD algorithms after login", async () => {
    const raw = await login(allowAll.port);
    const caps = untagged(await raw.command("c", "CAPABILITY"))[0]!.split(" ");
    for (const c of ["ESEARCH", "SORT", "SORT=DISPLAY", "ESORT", "THREAD=REFERENCES", "THREAD=ORDEREDSUBJECT"]) {
      expect(caps).toContain(c);
    }
    raw.close();
  });

  test("every SORT, ESORT, THREAD and ESEARCH command over INBOX gets Dovecot's untagged answer", async () => {
    const proxy = await login(allowAll.port);
    const direct = await login(upstreams().ports.imap);
    expect(statusOf(await proxy.command("s", "EXAMINE INBOX"), "s")).toStartWith("s OK");
    expect(statusOf(await direct.command("s", "EXAMINE INBOX"), "s")).toStartWith("s OK");
    let compared = 0;
    for (const [i, c] of commands().entries()) {
      const tag = `t${i}`;
      const want = await direct.command(tag, c);
      const got = await proxy.command(tag, c);
      expect(`${c} => ${statusOf(got, tag).split(" ")[1]}`).toBe(`${c} => ${statusOf(want, tag).split(" ")[1]}`);
      expect([c, ...untagged(got)]).toEqual([c, ...untagged(want)]);
      compared++;
    }
    expect(compared).toBe(commands().length);
    proxy.close();
    direct.close();
  });

  test("imapflow's ESEARCH (RETURN MIN MAX COUNT ALL) through the proxy equals Dovecot's", async () => {
    const viaProxy: ImapFlow = await proxyClient(allowAll.port, mailbox.user, mailbox.password);
    const direct = await connectImap(mailbox);
    for (const c of [viaProxy, direct]) await c.mailboxOpen("INBOX", { readOnly: true });
    const options = { uid: true, returnOptions: ["MIN", "MAX", "COUNT", "ALL"] as const };
    for (const query of [{ all: true }, { subject: "budget" }, { from: "nobody-at-all" }]) {
      const want = await direct.search(query, { ...options, returnOptions: [...options.returnOptions] });
      const got = await viaProxy.search(query, { ...options, returnOptions: [...options.returnOptions] });
      expect(got).toEqual(want);
      expect(typeof got === "object" && got !== null && !Array.isArray(got)).toBe(true);
    }
    await viaProxy.logout();
    await direct.logout();
  });

  test("python imaplib's sort() and thread() through the proxy get Dovecot's answers", async () => {
    const direct = await pythonSortThread(upstreams().ports.imap, "INBOX");
    expect(direct).toContain("sort OK");
    expect(direct).toContain("thread OK");
    expect(await pythonSortThread(allowAll.port, "INBOX")).toBe(direct);
  });

  test("each SORT and THREAD is audited as a read of the folder", async () => {
    const raw = await login(allowAll.port);
    await raw.command("s", "EXAMINE INBOX");
    await raw.command("a", "UID SORT (DATE) UTF-8 ALL");
    await raw.command("b", "THREAD REFERENCES UTF-8 ALL");
    raw.close();
    const rows = (await allowAll.rows()).filter((r) => r.command === "UID SORT" || r.command === "THREAD");
    expect(rows.map((r) => [r.command, r.operation, r.folder, r.decision, r.count])).toContainEqual([
      "UID SORT",
      "mail:read",
      "INBOX",
      "allow",
      MESSAGES.length,
    ]);
    expect(rows.map((r) => [r.command, r.count])).toContainEqual(["THREAD", MESSAGES.length]);
  });
});

/** SORT and THREAD (sequence numbers) as python's imaplib asks them and reads their results. */
const PYTHON = `
import imaplib, sys
c = imaplib.IMAP4("127.0.0.1", int(sys.argv[1]))
c.login(sys.argv[2], sys.argv[3])
c.select(sys.argv[4], readonly=True)
for program in ["(REVERSE DATE)", "(SUBJECT SIZE)", "(FROM)"]:
    typ, data = c.sort(program, "UTF-8", "ALL")
    print("sort", typ, program, data)
for algorithm in ["REFERENCES", "ORDEREDSUBJECT"]:
    typ, data = c.thread(algorithm, "UTF-8", "ALL")
    print("thread", typ, algorithm, data)
c.logout()
`;

async function pythonSortThread(port: number, folder: string): Promise<string> {
  // Asynchronous spawn: the proxy runs in this process.
  const args = ["/usr/bin/python3", "-c", PYTHON, String(port), mailbox.user, mailbox.password, folder];
  return new Response(Bun.spawn(args).stdout).text();
}

/** VisibleOnly's UIDs written as INBOX's (same position among the visible messages). */
function toInboxUid(uid: number): number {
  const i = visibleOnlyUids.indexOf(uid);
  expect(i).toBeGreaterThanOrEqual(0);
  return inboxVisibleUids[i]!;
}

/** An untagged answer from VisibleOnly with its UIDs mapped to INBOX's (UID forms only). */
function mapUids(line: string): string {
  const es = /^(\* ESEARCH \(TAG "[^"]+"\) UID)(.*)$/.exec(line);
  if (es !== null) {
    // Ranges of UIDs do not map number by number: expand, map, write again.
    return (
      es[1] +
      es[2]!.replace(/ (MIN|MAX|ALL) ([\d:,]+)/g, (_, item: string, v: string) => {
        const mapped = expandSeqSet(v).map(toInboxUid);
        return ` ${item} ${item === "ALL" ? mappedSet(mapped) : mapped[0]}`;
      })
    );
  }
  return line.replace(/\d+/g, (n) => String(toInboxUid(Number(n))));
}

/** `a:b` ranges and single numbers, in the order written. */
function expandSeqSet(set: string): number[] {
  return set.split(",").flatMap((part) => {
    const [a, b] = part.split(":").map(Number) as [number, number | undefined];
    if (b === undefined) return [a];
    return Array.from({ length: Math.abs(b - a) + 1 }, (_, k) => (a <= b ? a + k : a - k));
  });
}

/** Numbers in the order given, each run of consecutive ascending numbers as a range (ESEARCH and ESORT's ALL). */
function mappedSet(numbers: number[]): string {
  const parts: string[] = [];
  for (let i = 0; i < numbers.length; ) {
    let j = i;
    while (j + 1 < numbers.length && numbers[j + 1] === numbers[j]! + 1) j++;
    parts.push(j === i ? String(numbers[i]) : `${numbers[i]}:${numbers[j]}`);
    i = j + 1;
  }
  return parts.join(",");
}

describe("filtered INBOX: answers equal Dovecot's over a folder of the visible messages only", () => {
  test("the hidden messages change Dovecot's own answers (the comparison is not vacuous)", async () => {
    const direct = await login(upstreams().ports.imap);
    await direct.command("s", "EXAMINE INBOX");
    const full = untagged(await direct.command("a", "THREAD REFERENCES UTF-8 ALL"));
    const fullOs = untagged(await direct.command("b", "THREAD ORDEREDSUBJECT UTF-8 ALL"));
    await direct.command("v", "EXAMINE VisibleOnly");
    const visible = untagged(await direct.command("a", "THREAD REFERENCES UTF-8 ALL"));
    const visibleOs = untagged(await direct.command("b", "THREAD ORDEREDSUBJECT UTF-8 ALL"));
    // The thread shapes differ, not only the numbers: count the parentheses.
    const shape = (l: string[]) => l.join("").replace(/\d+/g, "n");
    expect(shape(full)).not.toBe(shape(visible));
    expect(shape(fullOs)).not.toBe(shape(visibleOs));
    direct.close();
  });

  test("every SORT, ESORT, THREAD and ESEARCH command: the proxy's answer is the visible-only folder's", async () => {
    const proxy = await login(filtered.port);
    const direct = await login(upstreams().ports.imap);
    expect(statusOf(await proxy.command("s", "EXAMINE INBOX"), "s")).toStartWith("s OK");
    expect(statusOf(await direct.command("s", "EXAMINE VisibleOnly"), "s")).toStartWith("s OK");
    let compared = 0;
    for (const [i, c] of commands().entries()) {
      const tag = `t${i}`;
      const want = await direct.command(tag, c);
      const got = await proxy.command(tag, c);
      expect(`${c} => ${statusOf(got, tag).split(" ")[1]}`).toBe(`${c} => ${statusOf(want, tag).split(" ")[1]}`);
      const wantLines = untagged(want).map((l) => (c.startsWith("UID ") ? mapUids(l) : l));
      expect([c, ...untagged(got)]).toEqual([c, ...wantLines]);
      // No hidden UID, Message-ID or subject ever reaches the agent.
      for (const s of MESSAGES.filter(hidden)) expect(got).not.toContain(s.id);
      compared++;
    }
    expect(compared).toBe(commands().length);
    proxy.close();
    direct.close();
  });

  test("python imaplib's sort() and thread() over the filtered INBOX: the visible-only folder's answers", async () => {
    const direct = await pythonSortThread(upstreams().ports.imap, "VisibleOnly");
    expect(direct).toContain("thread OK");
    expect(await pythonSortThread(filtered.port, "INBOX")).toBe(direct);
  });

  test("COUNT, MIN and MAX over the hidden messages alone: nothing, as in a folder without them", async () => {
    const proxy = await login(filtered.port);
    await proxy.command("s", "EXAMINE INBOX");
    for (const c of [
      "SEARCH RETURN (MIN MAX COUNT) FROM evil.test",
      "UID SORT RETURN (MIN MAX COUNT ALL) (SIZE) UTF-8 FROM evil.test",
    ]) {
      expect(untagged(await proxy.command("e", c))).toEqual([
        `* ESEARCH (TAG "e")${c.startsWith("UID") ? " UID" : ""} COUNT 0`,
      ]);
    }
    expect(untagged(await proxy.command("t", "THREAD REFERENCES UTF-8 FROM evil.test"))).toEqual(["* THREAD"]);
    expect(untagged(await proxy.command("o", "SORT (DATE) UTF-8 FROM evil.test"))).toEqual(["* SORT"]);
    proxy.close();
  });
});

describe("THREAD reads at most THREAD_HEADER_OCTETS of each message's fields", () => {
  const fields = "DATE SUBJECT MESSAGE-ID IN-REPLY-TO REFERENCES";

  /** A reply to <mid> whose fetched fields are `octets` long: its References start with padding ids. */
  function longReply(octets: number): string {
    const head = (refs: string) =>
      `Subject: Other\r\nMessage-ID: <long@t.test>\r\nDate: 3 Nov 2026 09:00 +0000\r\nReferences: ${refs}\r\n`;
    const ids = (pad: number) => {
      const list = Array.from({ length: 400 }, (_, k) => `<pad-${k}@t.test>`);
      list[0] = `<pad-${"x".repeat(pad)}@t.test>`;
      return `${list.join("\r\n ")}\r\n <mid@t.test>`;
    };
    // The fetched block is the field lines and an empty line (RFC 3501 §6.4.5 HEADER.FIELDS).
    const base = head(ids(0)).length + 2;
    expect(octets).toBeGreaterThan(base);
    return `${head(ids(octets - base))}\r\nbody\r\n`;
  }

  // The block ends with the last id's ">", then CRLF and the empty line's CRLF: with a block of limit + 4 octets the
  // ">" is the limit's last octet and the id is read; one octet more and it is cut.
  test("an id ending on the limit's last octet is read; one octet further it is cut", async () => {
    const { THREAD_HEADER_OCTETS } = await import("../../src/imap/limits.ts");
    const client = await connectImap(mailbox);
    for (const [folder, octets] of [
      ["AtLimit", THREAD_HEADER_OCTETS + 4],
      ["PastLimit", THREAD_HEADER_OCTETS + 5],
    ] as const) {
      await client.mailboxCreate(folder);
      const root = "Subject: Long\r\nMessage-ID: <root@t.test>\r\nDate: 1 Nov 2026 09:00 +0000\r\n\r\nroot\r\n";
      await client.append(folder, root);
      const mid =
        "Subject: Re: Long\r\nMessage-ID: <mid@t.test>\r\nReferences: <root@t.test>\r\n" +
        "Date: 2 Nov 2026 09:00 +0000\r\n\r\nmid\r\n";
      await client.append(folder, mid);
      await client.append(folder, longReply(octets));
    }
    await client.logout();
    const direct = await login(upstreams().ports.imap);
    const proxy = await login(allowAll.port);
    for (const [folder, octets, want] of [
      ["AtLimit", THREAD_HEADER_OCTETS + 4, "* THREAD (1 2 3)"],
      ["PastLimit", THREAD_HEADER_OCTETS + 5, "* THREAD (1 2)(3)"],
    ] as const) {
      await direct.command("s", `EXAMINE ${folder}`);
      await proxy.command("s", `EXAMINE ${folder}`);
      // The block Dovecot returns is as long as intended.
      const block = await direct.command("f", `FETCH 3 (BODY.PEEK[HEADER.FIELDS (${fields})])`);
      expect(block).toContain(`{${octets}}`);
      expect(untagged(await direct.command("t", "THREAD REFERENCES UTF-8 ALL"))).toEqual(["* THREAD (1 2 3)"]);
      expect(untagged(await proxy.command("t", "THREAD REFERENCES UTF-8 ALL"))).toEqual([want]);
    }
    direct.close();
    proxy.close();
  });
});

describe("THREAD over a reply chain as deep as it is long", () => {
  // Each message answers the one before it. The recursive passes of the old THREAD code exhausted the call stack
  // from about 20,000 links (commands/thread.ts answered NO [SERVERBUG]); any sender can mail such a chain.
  const DEPTH = 30_000;
  /** Messages per MULTIAPPEND (RFC 3502) with non-synchronizing literals (RFC 7888): one session seeds it fast. */
  const BATCH = 1000;

  const message = (i: number): string =>
    `Message-ID: <c${i}@chain.test>\r\nSubject: ${i === 1 ? "" : "Re: "}chain\r\n` +
    `${i === 1 ? "" : `References: <c${i - 1}@chain.test>\r\n`}\r\nx\r\n`;

  // Dovecot itself cuts such a chain every 1,002 levels into nested sub-lists; the proxy computes THREAD itself
  // (commands/thread.ts) and answers the one list RFC 5256 §4 and §5 give.
  test(`${DEPTH} messages in one chain: REFERENCES lists them in one thread, and the session goes on`, async () => {
    const direct = await login(upstreams().ports.imap);
    expect(statusOf(await direct.command("c", "CREATE Chain"), "c")).toStartWith("c OK");
    for (let from = 1; from <= DEPTH; from += BATCH) {
      const literals: string[] = [];
      for (let i = from; i < from + BATCH && i <= DEPTH; i++) {
        const m = message(i);
        literals.push(` {${m.length}+}\r\n${m}`);
      }
      direct.write(`a${from} APPEND Chain${literals.join("")}\r\n`);
      expect(statusOf(await direct.waitTagged(`a${from}`), `a${from}`)).toStartWith(`a${from} OK`);
    }
    const want = `* THREAD (${Array.from({ length: DEPTH }, (_, k) => k + 1).join(" ")})`;
    expect(await direct.command("s", "EXAMINE Chain")).toContain(`* ${DEPTH} EXISTS`);
    direct.close();
    const proxy = await login(allowAll.port);
    await proxy.command("s", "EXAMINE Chain");
    const reply = await proxy.command("t", "THREAD REFERENCES UTF-8 ALL");
    expect(statusOf(reply, "t")).toStartWith("t OK");
    expect(untagged(reply)).toEqual([want]);
    // The session goes on.
    expect(statusOf(await proxy.command("n", "NOOP"), "n")).toStartWith("n OK");
    proxy.close();
  }, 180_000);
});
