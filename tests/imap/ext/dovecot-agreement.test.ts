/**
 * SORT, THREAD and ESEARCH computed by src/imap/ext from fetched message data agree with Dovecot's own answers over
 * the same folder: replies and forwards in every spelling, encoded-word subjects, missing, broken, equal and
 * zoned dates, a missing parent, In-Reply-To without References, a duplicate Message-ID and a reference loop.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { ImapFlow } from "imapflow";
import { esearchResponse, type ReturnOption } from "../../../src/imap/ext/esearch.ts";
import type { EnvelopeAddress } from "../../../src/imap/ext/keys.ts";
import { parseSortCriteria, type SortMessage, sortMessages } from "../../../src/imap/ext/sort.ts";
import { type ThreadMessage, thread, threadResponse } from "../../../src/imap/ext/thread.ts";
import { connectImap, createMailbox, type TestMailbox, upstreams } from "../../fixtures/index.ts";
import { RawImap, statusOf } from "../helpers.ts";

const FOLDER = "Threads";

interface Spec {
  readonly headers: Readonly<Record<string, string>>;
  /** INTERNALDATE given to APPEND. */
  readonly arrival: string;
  readonly body?: string;
}

const D = (day: number, time: string, zone = "+0000") => `${day} Nov 2026 ${time} ${zone}`;

/** The folder's messages in mailbox order; header order as written. */
const MESSAGES: readonly Spec[] = [
  {
    headers: {
      From: "Ann Author <ann@corp.test>",
      To: "team@corp.test",
      Subject: "Project plan",
      "Message-ID": "<plan@corp.test>",
      Date: `Mon, ${D(2, "09:00:00")}`,
    },
    arrival: "02-Nov-2026 09:00:05 +0000",
  },
  {
    headers: {
      From: "bob@corp.test",
      To: "Ann Author <ann@corp.test>",
      Cc: "team@corp.test",
      Subject: "Re: Project plan",
      "Message-ID": "<plan-r1@corp.test>",
      "In-Reply-To": "<plan@corp.test>",
      References: "<plan@corp.test>",
      Date: `Mon, ${D(2, "11:30:00", "+0200")}`,
    },
    arrival: "02-Nov-2026 09:31:00 +0000",
    body: "Looks good to me, with one remark about the schedule.",
  },
  {
    headers: {
      From: '"Zed" <zed@elsewhere.test>',
      To: "bob@corp.test",
      Subject: "RE: [team] Re: Project plan",
      "Message-ID": "<plan-r2@elsewhere.test>",
      References: "<plan@corp.test>\r\n <plan-r1@corp.test>",
      Date: `${D(2, "05:00:00", "-0500")}`,
    },
    arrival: "02-Nov-2026 10:01:00 +0000",
  },
  {
    headers: {
      From: "=?UTF-8?B?w4l0aWVubmU=?= <etienne@corp.test>",
      To: "ann@corp.test",
      Subject: "Fwd: Project plan",
      "Message-ID": "<plan-fwd@corp.test>",
      Date: `Tue, ${D(3, "08:00:00")}`,
    },
    arrival: "03-Nov-2026 08:00:00 +0000",
  },
  {
    headers: {
      From: "carol@corp.test",
      To: "=?ISO-8859-1?Q?Andr=E9?= <andre@corp.test>",
      Subject: "[fwd: Budget 2027]",
      "Message-ID": "<budget-fwd@corp.test>",
      Date: `${D(4, "10:00:00")}`,
    },
    arrival: "04-Nov-2026 10:00:00 +0000",
  },
  {
    headers: {
      From: "Dave <dave@corp.test>",
      To: "carol@corp.test",
      Subject: "Budget 2027 (fwd)",
      "Message-ID": "<budget-2@corp.test>",
      Date: `${D(4, "10:00:00")}`,
    },
    arrival: "04-Nov-2026 10:00:00 +0000",
  },
  {
    headers: {
      From: "dave@corp.test",
      To: "carol@corp.test",
      Subject: "budget 2027",
      "Message-ID": "<budget-3@corp.test>",
      Date: `${D(5, "10:00:00")}`,
    },
    arrival: "05-Nov-2026 10:00:00 +0000",
  },
  {
    headers: {
      From: "Eve <eve@corp.test>",
      To: "ann@corp.test",
      Subject: "  re :  Re: budget   2027  ",
      "Message-ID": "<budget-4@corp.test>",
      "In-Reply-To": "<budget-3@corp.test> (the budget thread)",
      Date: `${D(5, "12:00:00")}`,
    },
    arrival: "05-Nov-2026 12:00:00 +0000",
  },
  {
    headers: {
      From: "frank@corp.test",
      To: "ann@corp.test",
      Subject: "No date at all",
      "Message-ID": "<nodate@corp.test>",
    },
    arrival: "01-Nov-2026 07:00:00 +0000",
  },
  {
    headers: {
      From: "grace@corp.test",
      To: "ann@corp.test",
      Subject: "Broken date",
      "Message-ID": "<baddate@corp.test>",
      Date: "sometime next week",
    },
    arrival: "06-Nov-2026 07:00:00 +0000",
  },
  {
    headers: {
      From: "heidi@corp.test",
      To: "ann@corp.test",
      Subject: "Re: Lost parent",
      "Message-ID": "<lost-1@corp.test>",
      References: "<never-seen@corp.test>",
      Date: `${D(6, "09:00:00")}`,
    },
    arrival: "06-Nov-2026 09:00:00 +0000",
  },
  {
    headers: {
      From: "ivan@corp.test",
      To: "ann@corp.test",
      Subject: "Re: Lost parent",
      "Message-ID": "<lost-2@corp.test>",
      References: "<never-seen@corp.test>",
      Date: `${D(6, "08:00:00")}`,
    },
    arrival: "06-Nov-2026 09:05:00 +0000",
  },
  {
    headers: {
      From: "judy@corp.test",
      To: "ann@corp.test",
      Subject: "=?UTF-8?B?UmU6IEhlbGxv?=",
      "Message-ID": "<hello-r@corp.test>",
      References: "<hello@corp.test>",
      Date: `${D(7, "09:00:00")}`,
    },
    arrival: "07-Nov-2026 09:00:00 +0000",
  },
  {
    headers: {
      From: "judy@corp.test",
      To: "ann@corp.test",
      Subject: "Hello",
      "Message-ID": "<hello@corp.test>",
      Date: `${D(7, "08:00:00")}`,
    },
    arrival: "07-Nov-2026 09:01:00 +0000",
  },
  {
    headers: {
      From: "mallory@corp.test",
      To: "ann@corp.test",
      Subject: "Duplicate id",
      "Message-ID": "<hello@corp.test>",
      Date: `${D(7, "10:00:00")}`,
    },
    arrival: "07-Nov-2026 10:00:00 +0000",
  },
  {
    headers: {
      From: "loop@corp.test",
      To: "ann@corp.test",
      Subject: "Loop A",
      "Message-ID": "<loop-a@corp.test>",
      References: "<loop-b@corp.test>",
      Date: `${D(8, "09:00:00")}`,
    },
    arrival: "08-Nov-2026 09:00:00 +0000",
  },
  {
    headers: {
      From: "loop@corp.test",
      To: "ann@corp.test",
      Subject: "Loop B",
      "Message-ID": "<loop-b@corp.test>",
      References: "<loop-a@corp.test>",
      Date: `${D(8, "09:00:00")}`,
    },
    arrival: "08-Nov-2026 09:00:00 +0000",
  },
  {
    headers: { From: "nobody@corp.test", Subject: "", "Message-ID": "<empty-1@corp.test>", Date: D(9, "09:00:00") },
    arrival: "09-Nov-2026 09:00:00 +0000",
  },
  {
    headers: { To: "ann@corp.test", "Message-ID": "<empty-2@corp.test>", Date: D(9, "08:00:00") },
    arrival: "09-Nov-2026 09:00:00 +0000",
  },
  {
    headers: {
      From: "Ann Author <ann@corp.test>",
      To: "bob@corp.test",
      Cc: "Zed <zed@elsewhere.test>",
      Subject: "[PATCH] fix the parser",
      "Message-ID": "<patch-1@corp.test>",
      Date: `${D(10, "09:00:00")}`,
    },
    arrival: "10-Nov-2026 09:00:00 +0000",
    body: "A longer body ".repeat(40),
  },
  {
    headers: {
      From: "bob@corp.test",
      To: "ann@corp.test",
      Subject: "Re: [PATCH] fix the parser",
      "Message-ID": "<patch-2@corp.test>",
      "In-Reply-To": "<patch-1@corp.test>",
      Date: `${D(10, "09:00:00")}`,
    },
    arrival: "10-Nov-2026 09:00:00 +0000",
  },
  {
    headers: {
      From: "carol@corp.test",
      To: "bob@corp.test",
      Subject: "[PATCH]",
      "Message-ID": "<patch-3@corp.test>",
      Date: `Tue, 10 Nov 26 09:00:00 EST`,
    },
    arrival: "10-Nov-2026 14:00:00 +0000",
  },
  {
    headers: {
      From: "zoe@corp.test",
      To: "Team: ann@corp.test, bob@corp.test;",
      Subject: "Fw: Re: weekly report",
      "Message-ID": "<weekly@corp.test>",
      Date: `${D(11, "09:00:00")}`,
    },
    arrival: "11-Nov-2026 09:00:00 +0000",
  },
  {
    headers: {
      From: "zoe@corp.test",
      To: "ann@corp.test",
      Subject: "Weekly report",
      "Message-ID": "<weekly-2@corp.test>",
      References: "<weekly@corp.test> <weekly-missing@corp.test>",
      Date: `${D(11, "10:00:00")}`,
    },
    arrival: "11-Nov-2026 10:00:00 +0000",
  },
  {
    headers: {
      From: "kim@corp.test",
      To: "ann@corp.test",
      Subject: "Lunch?",
      "Message-ID": "<lunch-1@corp.test>",
      Date: D(12, "11:00:00"),
    },
    arrival: "12-Nov-2026 11:00:00 +0000",
  },
  {
    headers: {
      From: "lee@corp.test",
      To: "ann@corp.test",
      Subject: "lunch?",
      "Message-ID": "<lunch-2@corp.test>",
      Date: D(12, "10:00:00"),
    },
    arrival: "12-Nov-2026 11:01:00 +0000",
  },
  {
    headers: {
      From: "kim@corp.test",
      To: "lee@corp.test",
      Subject: "Re: Lunch?",
      "Message-ID": "<lunch-3@corp.test>",
      References: "<lunch-2@corp.test>",
      Date: D(12, "10:00:00"),
    },
    arrival: "12-Nov-2026 11:02:00 +0000",
  },
  {
    headers: {
      From: "max@corp.test",
      To: "ann@corp.test",
      Subject: "Re: Lunch?",
      "Message-ID": "<lunch-4@corp.test>",
      Date: D(12, "12:00:00"),
    },
    arrival: "12-Nov-2026 12:00:00 +0000",
  },
];

function render(spec: Spec, i: number): string {
  const lines = Object.entries(spec.headers).map(([k, v]) => `${k}: ${v}`);
  return `${lines.join("\r\n")}\r\n\r\n${spec.body ?? `Body ${i}.`}\r\n`;
}

let mailbox: TestMailbox;
let dovecot: RawImap;
let client: ImapFlow;
let sortData: SortMessage[];
let threadData: ThreadMessage[];
/** UID → sequence number. */
let seqOf: Map<number, number>;

/** Header fields from a raw header block (unfolded; last one wins; null when absent). */
function headerFields(raw: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of raw.replace(/\r?\n(?=[ \t])/g, "").split(/\r?\n/)) {
    const colon = line.indexOf(":");
    if (colon > 0) out.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).replace(/^ /, ""));
  }
  return out;
}

function addresses(
  list: readonly { name?: string | undefined; address?: string | undefined }[] | undefined,
): EnvelopeAddress[] | null {
  if (list === undefined || list.length === 0) return null;
  return list.map((a) => {
    // imapflow gives a group's start marker, (NIL NIL "Team" NIL) in the ENVELOPE, as { name: "Team", address: "" }.
    if (a.address === "") return { name: null, mailbox: a.name ?? null, host: null };
    const at = a.address?.lastIndexOf("@") ?? -1;
    return {
      name: a.name === undefined || a.name === "" ? null : a.name,
      mailbox: at < 0 ? (a.address ?? null) : a.address!.slice(0, at),
      host: at < 0 ? null : a.address!.slice(at + 1),
    };
  });
}

beforeAll(async () => {
  mailbox = await createMailbox();
  client = await connectImap(mailbox);
  await client.mailboxCreate(FOLDER);
  for (const [i, spec] of MESSAGES.entries()) await client.append(FOLDER, render(spec, i), [], new Date(spec.arrival));
  await client.mailboxOpen(FOLDER, { readOnly: true });
  sortData = [];
  threadData = [];
  seqOf = new Map();
  for await (const m of client.fetch("1:*", {
    uid: true,
    internalDate: true,
    size: true,
    envelope: true,
    headers: ["date", "subject", "references", "message-id", "in-reply-to"],
  })) {
    const h = headerFields(m.headers?.toString("latin1") ?? "");
    const internalDate = new Date(m.internalDate as Date | string).getTime();
    seqOf.set(m.uid, m.seq);
    sortData.push({
      id: m.uid,
      internalDate,
      size: m.size ?? 0,
      date: h.get("date") ?? null,
      subject: h.get("subject") ?? null,
      from: addresses(m.envelope?.from),
      to: addresses(m.envelope?.to),
      cc: addresses(m.envelope?.cc),
    });
    threadData.push({
      id: m.uid,
      internalDate,
      date: h.get("date") ?? null,
      subject: h.get("subject") ?? null,
      messageId: h.get("message-id") ?? null,
      inReplyTo: h.get("in-reply-to") ?? null,
      references: h.get("references") ?? null,
    });
  }
  expect(sortData.length).toBe(MESSAGES.length);
  dovecot = await RawImap.open(upstreams().ports.imap);
  expect(statusOf(await dovecot.command("L", `LOGIN "${mailbox.user}" "${mailbox.password}"`), "L")).toStartWith(
    "L OK",
  );
  expect(statusOf(await dovecot.command("S", `EXAMINE ${FOLDER}`), "S")).toStartWith("S OK");
});

afterAll(async () => {
  dovecot?.close();
  await client?.logout();
});

/** The one untagged line of `kind` in a reply (without CRLF). */
function line(reply: string, kind: string): string {
  const found = reply.split("\r\n").filter((l) => l === `* ${kind}` || l.startsWith(`* ${kind} `));
  expect(found.length).toBe(1);
  return found[0]!;
}

const PROGRAMS = [
  "ARRIVAL",
  "DATE",
  "REVERSE DATE",
  "SIZE",
  "REVERSE SIZE",
  "SUBJECT",
  "SUBJECT DATE",
  "REVERSE SUBJECT",
  "FROM",
  "FROM REVERSE DATE",
  "TO",
  "CC",
  "CC SUBJECT",
  "DISPLAYFROM",
  "DISPLAYTO",
  "REVERSE DISPLAYFROM SIZE",
];

describe("SORT (RFC 5256 §3, RFC 5957) agrees with Dovecot", () => {
  for (const program of PROGRAMS) {
    test(`UID SORT (${program})`, async () => {
      const reply = await dovecot.command("s", `UID SORT (${program}) UTF-8 ALL`);
      const criteria = parseSortCriteria(program.split(" "))!;
      expect(criteria).not.toBeNull();
      const ours = sortMessages(sortData, criteria);
      expect(`* SORT ${ours.join(" ")}`).toBe(line(reply, "SORT"));
    });
  }

  test("SORT (SUBJECT) by sequence number, and over a subset (the agent's view)", async () => {
    const reply = await dovecot.command("s", "SORT (SUBJECT) UTF-8 ALL");
    const bySeq = sortData.map((m) => ({ ...m, id: seqOf.get(m.id)! }));
    expect(`* SORT ${sortMessages(bySeq, parseSortCriteria(["SUBJECT"])!).join(" ")}`).toBe(line(reply, "SORT"));
    const subset = sortData.filter((_, i) => i % 3 !== 1);
    const set = subset.map((m) => m.id).join(",");
    const sub = await dovecot.command("t", `UID SORT (DATE FROM) UTF-8 UID ${set}`);
    expect(`* SORT ${sortMessages(subset, parseSortCriteria(["DATE", "FROM"])!).join(" ")}`).toBe(line(sub, "SORT"));
  });
});

describe("THREAD (RFC 5256 §4) agrees with Dovecot", () => {
  for (const algorithm of ["ORDEREDSUBJECT", "REFERENCES"] as const) {
    test(`UID THREAD ${algorithm}`, async () => {
      const reply = await dovecot.command("t", `UID THREAD ${algorithm} UTF-8 ALL`);
      expect(threadResponse(thread(algorithm, threadData))).toBe(line(reply, "THREAD"));
    });

    test(`THREAD ${algorithm} by sequence number`, async () => {
      const reply = await dovecot.command("t", `THREAD ${algorithm} UTF-8 ALL`);
      const bySeq = threadData.map((m) => ({ ...m, id: seqOf.get(m.id)! }));
      expect(threadResponse(thread(algorithm, bySeq))).toBe(line(reply, "THREAD"));
    });
  }
});

describe("ESEARCH (RFC 4731) agrees with Dovecot", () => {
  const cases: ReadonlyArray<[string, string]> = [
    ["MIN MAX COUNT ALL", "ALL"],
    ["", "SUBJECT budget"],
    ["COUNT", "SUBJECT nothing-matches-this"],
    ["MIN MAX COUNT ALL", "SUBJECT nothing-matches-this"],
    ["MAX ALL", "OR FROM bob FROM judy"],
    ["MIN COUNT", "NOT SUBJECT plan"],
  ];
  for (const [options, criteria] of cases) {
    for (const uid of [true, false]) {
      test(`${uid ? "UID " : ""}SEARCH RETURN (${options}) ${criteria}`, async () => {
        const prefix = uid ? "UID " : "";
        const plain = line(await dovecot.command("p", `${prefix}SEARCH ${criteria}`), "SEARCH");
        const matches = plain.slice("* SEARCH".length).trim().split(" ").filter(Boolean).map(Number);
        const reply = await dovecot.command("e", `${prefix}SEARCH RETURN (${options}) ${criteria}`);
        const words = options.split(" ").filter(Boolean) as ReturnOption[];
        expect(esearchResponse("e", uid, matches, words)).toBe(line(reply, "ESEARCH"));
      });
    }
  }
});
