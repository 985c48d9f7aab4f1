import { Database } from "bun:sqlite";
import { describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ClassificationCache } from "../../src/imap/cache.ts";
import {
  classifyMailbox,
  classifyUids,
  classifyVerdicts,
  hasAttachment,
  messageFilter,
  type UpstreamRunner,
} from "../../src/imap/classify.ts";
import { CLASSIFY_CHUNK, CLASSIFY_PARALLEL_MIN, MAX_STRUCTURE_DEPTH } from "../../src/imap/limits.ts";
import type { StatusResponse, UpstreamCommand } from "../../src/imap/upstream.ts";
import { NO_HIDING_RULE } from "../../src/imap/view.ts";
import type { Response, Value } from "../../src/imap/wire/index.ts";
import { decodeEncodedWords, parseHeaderFields, readMessageFields } from "../../src/mail/index.ts";
import { compilePolicy, type RuleSpec } from "../../src/policy/index.ts";

const SEED_RULES: RuleSpec[] = [
  {
    name: "Transactional emails from known senders",
    folders: ["INBOX"],
    from: ["notifications@*"],
    action: "allow",
    operations: ["read"],
  },
  { name: "Deny everything else", action: "deny" },
];

const bytes = (s: string) => new TextEncoder().encode(s);

describe("header sections", () => {
  test("unfolds continuation lines and lower-cases names", () => {
    const fields = parseHeaderFields(
      bytes("Subject: a long\r\n  subject\r\nFROM : x@y.test\r\n\r\nbody: not a header\r\n"),
    );
    expect(fields).toEqual([
      { name: "subject", value: "a long  subject" },
      { name: "from", value: "x@y.test" },
    ]);
  });

  test("bare LF line ends and a missing final blank line", () => {
    expect(parseHeaderFields(bytes("From: a@b.test\nTo: c@d.test"))).toEqual([
      { name: "from", value: "a@b.test" },
      { name: "to", value: "c@d.test" },
    ]);
  });

  test("a line that is not a field, or a leading continuation, is malformed", () => {
    expect(parseHeaderFields(bytes("From a@b.test\r\n"))).toBeNull();
    expect(parseHeaderFields(bytes(" folded: x\r\nFrom: a@b.test\r\n"))).toBeNull();
    expect(parseHeaderFields(bytes("Fr om: a@b.test\r\n"))).toBeNull();
  });
});

describe("encoded words (RFC 2047)", () => {
  test("B and Q, charsets, adjacent words joined", () => {
    expect(decodeEncodedWords("=?UTF-8?Q?Caf=C3=A9_on_Friday?=")).toBe("Café on Friday");
    expect(decodeEncodedWords("=?utf-8?B?Ym9zc0Bjb3JwLnRlc3Q=?=")).toBe("boss@corp.test");
    expect(decodeEncodedWords("=?ISO-8859-1?Q?a?= =?ISO-8859-1?Q?=E9?= z")).toBe("aé z");
    expect(decodeEncodedWords("=?UTF-8*en?Q?hi?=")).toBe("hi");
    expect(decodeEncodedWords("plain text")).toBe("plain text");
  });

  test("an undecodable word makes the value unknown", () => {
    expect(decodeEncodedWords("=?x-unknown-charset?Q?secret?=")).toBeNull();
    expect(decodeEncodedWords("=?UTF-8?B?not*base64?=")).toBeNull();
    expect(decodeEncodedWords("=?UTF-8?Q?bad=ZZ?=")).toBeNull();
  });
});

describe("message fields", () => {
  const read = (text: string) => readMessageFields(parseHeaderFields(bytes(text)));

  test("addresses from addr-specs, never display names; groups; encoded subject", () => {
    const f = read(
      '"notifications@shop.test" <spam@evil.test>\r\n'.replace(/^/, "From: ") +
        "To: Team: carol@corp.test, Me <me@x.test>;, other@x.test\r\n" +
        "Cc: =?UTF-8?Q?Andr=C3=A9?= <andre@friends.test>\r\nSubject: =?UTF-8?Q?Caf=C3=A9?=\r\n",
    );
    expect(f.from).toEqual(["spam@evil.test"]);
    expect(f.to).toEqual(["carol@corp.test", "me@x.test", "other@x.test"]);
    expect(f.cc).toEqual(["andre@friends.test"]);
    expect(f.bcc).toEqual([]);
    expect(f.subject).toBe("Café");
  });

  test("an encoded display name that decodes to an address is still only a name", () => {
    expect(read("From: =?UTF-8?B?Ym9zc0Bjb3JwLnRlc3Q=?= <spam@evil.test>\r\n").from).toEqual(["spam@evil.test"]);
  });

  test("several From or Subject fields, or a malformed list, are unknown", () => {
    expect(read("From: a@b.test\r\nFrom: c@d.test\r\n").from).toBeUndefined();
    expect(read("Subject: a\r\nSubject: b\r\n").subject).toBeUndefined();
    expect(read("From: <a@b.test\r\n").from).toBeUndefined();
    expect(read("Subject: =?bogus?Q?x?=\r\n").subject).toBeUndefined();
    expect(readMessageFields(null).from).toBeUndefined();
  });

  test("absent fields: empty lists and an empty subject", () => {
    const f = read("X-Other: 1\r\n");
    expect(f.from).toEqual([]);
    expect(f.subject).toBe("");
  });
});

describe("decisions under the seed rule", () => {
  const policy = compilePolicy(SEED_RULES);
  const filter = messageFilter(policy, "INBOX", null)!;
  const visible = (header: string) => filter.decideFetched(bytes(header), undefined).action === "allow";

  test("INBOX depends on From only; other folders need no filter", () => {
    expect([...filter.needs]).toEqual(["from"]);
    expect(filter.headerFields).toEqual(["FROM"]);
    expect(filter.bodyStructure).toBe(false);
    expect(messageFilter(policy, "Archive", null)).toBeNull();
  });

  test("the addr-spec decides; every author must match", () => {
    expect(visible("From: Shop <notifications@shop.test>\r\n\r\n")).toBe(true);
    expect(visible("From: NOTIFICATIONS@Shop.Test\r\n\r\n")).toBe(true);
    expect(visible('From: "notifications@shop.test" <spam@evil.test>\r\n\r\n')).toBe(false);
    expect(visible("From: notifications@shop.test, spam@evil.test\r\n\r\n")).toBe(false);
    expect(visible("From: notifications@shop.test\r\nFrom: notifications@shop.test\r\n\r\n")).toBe(false);
    expect(visible("\r\n")).toBe(false);
    expect(filter.decideFetched(null, undefined).action).toBe("deny");
  });

  test("fingerprint: same for renamed rules, changes with a relevant rule, not with other folders' rules", () => {
    const renamed = compilePolicy([{ ...SEED_RULES[0]!, name: "other name" }, SEED_RULES[1]!]);
    expect(messageFilter(renamed, "INBOX", null)!.fingerprint).toBe(filter.fingerprint);
    const widened = compilePolicy([{ ...SEED_RULES[0]!, from: ["notifications@*", "boss@*"] }, SEED_RULES[1]!]);
    expect(messageFilter(widened, "INBOX", null)!.fingerprint).not.toBe(filter.fingerprint);
    const unrelated = compilePolicy([{ name: "drafts", folders: ["Drafts"], action: "allow" }, ...SEED_RULES]);
    expect(messageFilter(unrelated, "INBOX", null)!.fingerprint).toBe(filter.fingerprint);
  });
});

describe("has_attachment from BODYSTRUCTURE", () => {
  const s = (v: string): Value => ({ type: "string", value: bytes(v) });
  const nil: Value = { type: "nil" };
  const n = (v: number): Value => ({ type: "number", value: v });
  const list = (...value: Value[]): Value => ({ type: "list", value });
  const text = (dsp: Value = nil, params: Value = list(s("charset"), s("utf-8"))) =>
    list(s("text"), s("plain"), params, nil, nil, s("7bit"), n(10), n(1), nil, dsp, nil, nil);
  const pdf = list(
    s("application"),
    s("pdf"),
    list(s("name"), s("r.pdf")),
    nil,
    nil,
    s("base64"),
    n(100),
    nil,
    list(s("attachment"), list(s("filename"), s("r.pdf"))),
    nil,
    nil,
  );

  test("text alone is not an attachment; a PDF part is; disposition or a file name make text one", () => {
    expect(hasAttachment(text())).toBe(false);
    expect(hasAttachment(list(text(), pdf, s("mixed")))).toBe(true);
    expect(hasAttachment(list(text(), text(), s("alternative")))).toBe(false);
    expect(hasAttachment(text(list(s("attachment"), nil)))).toBe(true);
    expect(hasAttachment(text(nil, list(s("name*0"), s("a.txt"))))).toBe(true);
    expect(hasAttachment(text(list(s("inline"), list(s("filename*"), s("utf-8''a.txt")))))).toBe(true);
  });

  test("an unreadable structure is unknown", () => {
    expect(hasAttachment(list())).toBeUndefined();
    expect(hasAttachment(list(s("text"), s("plain"), list(s("odd"))))).toBeUndefined();
    expect(hasAttachment(list(text(), list(), s("mixed")))).toBeUndefined();
  });

  test("parts nested in MAX_STRUCTURE_DEPTH multiparts are read; one level deeper is unknown", () => {
    const nested = (leaf: Value, levels: number): Value => {
      let v = leaf;
      for (let i = 0; i < levels; i++) v = list(v, s("mixed"));
      return v;
    };
    expect(hasAttachment(nested(text(), MAX_STRUCTURE_DEPTH))).toBe(false);
    expect(hasAttachment(nested(pdf, MAX_STRUCTURE_DEPTH))).toBe(true);
    expect(hasAttachment(nested(text(), MAX_STRUCTURE_DEPTH + 1))).toBeUndefined();
    expect(hasAttachment(nested(pdf, MAX_STRUCTURE_DEPTH + 1))).toBeUndefined();
    // Unknown denies where a rule reads has_attachment.
    const policy = compilePolicy([
      { name: "no attachments", folders: ["INBOX"], hasAttachment: false, action: "allow" },
    ]);
    const filter = messageFilter(policy, "INBOX", null)!;
    expect(filter.decideFetched(undefined, nested(text(), MAX_STRUCTURE_DEPTH)).action).toBe("allow");
    expect(filter.decideFetched(undefined, nested(text(), MAX_STRUCTURE_DEPTH + 1)).action).toBe("deny");
  });

  test("a has_attachment rule fetches BODYSTRUCTURE and no headers", () => {
    const policy = compilePolicy([
      { name: "no attachments", folders: ["INBOX"], hasAttachment: false, action: "allow" },
    ]);
    const filter = messageFilter(policy, "INBOX", null)!;
    expect(filter.headerFields).toEqual([]);
    expect(filter.fetchItems.map((i) => i.type)).toEqual(["UID", "BODYSTRUCTURE"]);
    expect(filter.decideFetched(undefined, text()).action).toBe("allow");
    expect(filter.decideFetched(undefined, list(text(), pdf, s("mixed"))).action).toBe("deny");
    expect(filter.decideFetched(undefined, undefined).action).toBe("deny");
  });
});

/** A fake upstream: messages by UID, answering UID FETCH a:b like Dovecot (only existing UIDs in range). */
class FakeUpstream implements UpstreamRunner {
  commands: UpstreamCommand[] = [];
  /** Milliseconds each command takes, so that two sessions take turns. */
  delayMs = 0;
  /** The n-th command (1-based) answers NO, or fails as a lost connection would, after sending its data. */
  failAt: { n: number; how: "NO" | "lost" } | null = null;
  constructor(
    readonly messages: Map<number, string>,
    readonly status: "OK" | "NO" = "OK",
  ) {}
  async run(command: UpstreamCommand, onData: (r: Response) => void): Promise<StatusResponse> {
    this.commands.push(command);
    if (this.delayMs > 0) await Bun.sleep(this.delayMs);
    if (command.name === "FETCH") {
      const { start, stop } = command.set[0]!;
      let seq = 0;
      for (const [uid, header] of [...this.messages].sort((a, b) => a[0] - b[0])) {
        seq++;
        if (uid < start || uid > stop) continue;
        onData({
          type: "FETCH",
          seq,
          attrs: [
            { name: "UID", value: uid },
            {
              name: "BODY[]",
              section: { part: [], text: "HEADER.FIELDS", fields: ["FROM"] },
              origin: null,
              data: bytes(header),
            },
          ],
        });
      }
    }
    if (this.failAt !== null && this.commands.length === this.failAt.n) {
      if (this.failAt.how === "lost") throw new Error("the upstream connection failed");
      return { type: "status", tag: "M1", status: "NO", code: null, text: "failed" };
    }
    return { type: "status", tag: "M1", status: this.status, code: null, text: "done" };
  }

  /** The UID ranges of its FETCH commands, as "lo:hi". */
  ranges(): string[] {
    return this.commands.flatMap((c) => (c.name === "FETCH" ? [`${c.set[0]!.start}:${c.set[0]!.stop}`] : []));
  }
}

describe("classifying through an upstream", () => {
  const policy = compilePolicy(SEED_RULES);
  const filter = messageFilter(policy, "INBOX", null)!;
  const from = (uid: number) =>
    uid % 3 === 0 ? "From: notifications@shop.test\r\n\r\n" : "From: spam@evil.test\r\n\r\n";

  test("chunks, keeps only visible UIDs, ignores unasked UIDs in a range, hides what upstream omits", async () => {
    const messages = new Map<number, string>();
    for (let uid = 1; uid <= 100; uid++) messages.set(uid, from(uid));
    const up = new FakeUpstream(messages);
    const asked = [...messages.keys()].filter((u) => u !== 50 && u !== 51);
    asked.push(101); // not upstream: expunged meanwhile
    const visible = await classifyUids(up, filter, asked, undefined, 30);
    expect(up.commands.length).toBe(4);
    expect([...visible]).toEqual(asked.filter((u) => u % 3 === 0 && u <= 100));
  });

  test("CLASSIFY_CHUNK UIDs go upstream in one FETCH; one more takes a second", async () => {
    const messages = new Map<number, string>();
    for (let uid = 1; uid <= CLASSIFY_CHUNK + 1; uid++) messages.set(uid, from(uid));
    const all = [...messages.keys()];
    const at = new FakeUpstream(messages);
    const visible = await classifyUids(at, filter, all.slice(0, CLASSIFY_CHUNK));
    expect(at.ranges()).toEqual([`1:${CLASSIFY_CHUNK}`]);
    expect(visible.length).toBe(Math.floor(CLASSIFY_CHUNK / 3));
    const past = new FakeUpstream(messages);
    expect([...(await classifyUids(past, filter, all))]).toEqual(all.filter((u) => u % 3 === 0));
    expect(past.ranges()).toEqual([`1:${CLASSIFY_CHUNK}`, `${CLASSIFY_CHUNK + 1}:${CLASSIFY_CHUNK + 1}`]);
  });

  test("a failed FETCH throws instead of guessing", async () => {
    const up = new FakeUpstream(new Map([[1, from(3)]]), "NO");
    await expect(classifyUids(up, filter, [1])).rejects.toThrow(/UID FETCH failed/);
  });

  test("cache: reopen fetches only new UIDs; expunged drop out; new UIDVALIDITY or corruption refetches", async () => {
    const dir = mkdtempSync(join(tmpdir(), "mailgator-classify-"));
    try {
      const path = join(dir, "mailgator-cache.db");
      const cache = ClassificationCache.open(path)!;
      const messages = new Map<number, string>();
      for (let uid = 1; uid <= 60; uid++) messages.set(uid, from(uid));
      const uids = () => [...messages.keys()].sort((a, b) => a - b);
      const base = { filter, cache, account: "imap.test:993/me", mailbox: "INBOX" };
      const first = await classifyMailbox({
        ...base,
        runner: new FakeUpstream(messages),
        uids: uids(),
        uidValidity: 7,
      });
      expect(first.fetched).toBe(60);
      expect(first.fromCache).toBe(false);
      expect(first.visible.size).toBe(20);

      messages.delete(60);
      for (let uid = 61; uid <= 66; uid++) messages.set(uid, from(uid));
      const up = new FakeUpstream(messages);
      const second = await classifyMailbox({ ...base, runner: up, uids: uids(), uidValidity: 7 });
      expect(second.fromCache).toBe(true);
      expect(second.fetched).toBe(6);
      expect(up.commands.length).toBe(1);
      expect([...second.visible.uids()]).toEqual(uids().filter((u) => u % 3 === 0));
      expect(second.visible.uidNext).toBe(67); // 66 is visible; 60 was, and was expunged

      const renewed = await classifyMailbox({
        ...base,
        runner: new FakeUpstream(messages),
        uids: uids(),
        uidValidity: 8,
      });
      expect(renewed.fromCache).toBe(false);
      expect(renewed.fetched).toBe(65);
      cache.close();

      writeFileSync(path, "this is not a database, just damage ".repeat(200));
      for (const suffix of ["-wal", "-shm"]) rmSync(path + suffix, { force: true });
      const logged: string[] = [];
      const reopened = ClassificationCache.open(path, (m) => logged.push(m))!;
      expect(reopened).not.toBeNull();
      const fresh = await classifyMailbox({
        ...base,
        cache: reopened,
        runner: new FakeUpstream(messages),
        uids: uids(),
        uidValidity: 8,
      });
      expect(fresh.fromCache).toBe(false);
      expect(fresh.fetched).toBe(65);
      expect(logged.join("\n")).toMatch(/damaged/);
      reopened.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  describe("with a helper session", () => {
    const truth = new Map<number, string>();
    for (let uid = 1; uid <= 300; uid++) truth.set(uid, from(uid));
    const all = [...truth.keys()];
    const want = all.filter((u) => u % 3 === 0);
    /** A helper that lends `aux` (or nothing), and tells when its use is over. */
    const lending = (aux: FakeUpstream | null) => {
      const state = { called: false, over: false };
      const helper = async (use: (r: UpstreamRunner) => Promise<void>) => {
        state.called = true;
        if (aux !== null) await use(aux);
        state.over = true;
      };
      return { helper, state };
    };
    const slow = (messages: Map<number, string>) => {
      const up = new FakeUpstream(messages);
      up.delayMs = 2;
      return up;
    };

    test("both sessions take chunks from one queue; each chunk fetched once; result is the one session's", async () => {
      const main = slow(truth);
      const aux = slow(truth);
      const { helper, state } = lending(aux);
      const visible = await classifyUids(main, filter, all, undefined, 20, helper);
      expect([...visible]).toEqual(want);
      expect(main.ranges().length).toBeGreaterThan(2);
      expect(aux.ranges().length).toBeGreaterThan(2);
      const ranges = [...main.ranges(), ...aux.ranges()].sort();
      expect(ranges.length).toBe(15);
      expect(new Set(ranges).size).toBe(15);
      expect(state.over).toBe(true);
    });

    for (const how of ["NO", "lost"] as const) {
      test(`a helper chunk failing (${how}) is refetched by the first session; its answers never count`, async () => {
        // For the first session, UIDs ending in 5 were expunged meanwhile: it returns nothing for them.
        const main = slow(new Map([...truth].filter(([u]) => u % 10 !== 5)));
        // The helper's session says that every message is from notifications@, then fails its second FETCH.
        const lies = new Map([...truth.keys()].map((u) => [u, "From: notifications@shop.test\r\n\r\n"]));
        const aux = slow(lies);
        aux.failAt = { n: 2, how };
        const visible = await classifyUids(main, filter, all, undefined, 20, lending(aux).helper);
        const failed = aux.ranges()[1]!;
        expect(main.ranges()).toContain(failed);
        expect(aux.commands.length).toBe(2);
        expect(main.ranges().length).toBe(14);
        // The chunk the helper finished OK counts as it answered; in the failed one, nothing it said is left, not
        // even for the UIDs the first session no longer finds.
        const [lo, hi] = aux.ranges()[0]!.split(":").map(Number) as [number, number];
        expect([...visible]).toEqual(all.filter((u) => (u >= lo && u <= hi) || (u % 3 === 0 && u % 10 !== 5)));
      });
    }

    test("a lender that calls `use` twice lends one session: the second call does nothing, no chunk lost", async () => {
      const main = slow(truth);
      const aux = slow(truth);
      const other = slow(truth);
      const twice = async (use: (r: UpstreamRunner) => Promise<void>) => {
        await Promise.all([use(aux), use(other)]);
      };
      expect([...(await classifyUids(main, filter, all, undefined, 20, twice))]).toEqual(want);
      expect(other.commands.length).toBe(0);
      expect(main.ranges().length + aux.ranges().length).toBe(15);
    });

    test("a helper that lends nothing, or fails before lending, leaves every chunk to the first session", async () => {
      const none = lending(null);
      const main = slow(truth);
      expect([...(await classifyUids(main, filter, all, undefined, 20, none.helper))]).toEqual(want);
      expect(none.state.called).toBe(true);
      expect(main.ranges().length).toBe(15);
      const failing = async () => {
        throw new Error("the upstream server refused the credentials on a second connection");
      };
      const again = slow(truth);
      expect([...(await classifyUids(again, filter, all, undefined, 20, failing))]).toEqual(want);
      expect(again.ranges().length).toBe(15);
    });

    test("the first session's failure throws while the helper works; the helper takes no further chunk", async () => {
      const main = slow(truth);
      main.failAt = { n: 3, how: "NO" };
      const aux = slow(truth);
      const { helper, state } = lending(aux);
      await expect(classifyUids(main, filter, all, undefined, 20, helper)).rejects.toThrow(/UID FETCH failed/);
      const taken = aux.commands.length;
      await Bun.sleep(20);
      expect(aux.commands.length).toBeLessThanOrEqual(taken);
      expect(state.over).toBe(true);
      expect(taken).toBeLessThan(12);
    });

    test(`a helper is lent from CLASSIFY_PARALLEL_MIN (${CLASSIFY_PARALLEL_MIN}) UIDs, not one below`, async () => {
      const many = new Map<number, string>();
      for (let uid = 1; uid <= CLASSIFY_PARALLEL_MIN; uid++) many.set(uid, from(uid));
      const uids = [...many.keys()];
      const base = { filter, cache: null, account: "a", mailbox: "INBOX", uidValidity: 1 };
      const below = lending(slow(many));
      const r1 = await classifyMailbox({
        ...base,
        runner: new FakeUpstream(many),
        uids: uids.slice(0, -1),
        helper: below.helper,
      });
      expect(below.state.called).toBe(false);
      expect(r1.visible.size).toBe(Math.floor((CLASSIFY_PARALLEL_MIN - 1) / 3));
      const at = lending(slow(many));
      const main = slow(many);
      const r2 = await classifyMailbox({ ...base, runner: main, uids, helper: at.helper });
      expect(at.state.called).toBe(true);
      expect(r2.visible.size).toBe(Math.floor(CLASSIFY_PARALLEL_MIN / 3));
      expect(main.ranges().length).toBeLessThan(CLASSIFY_PARALLEL_MIN / CLASSIFY_CHUNK);
    });
  });

  test("without a cache every open classifies everything", async () => {
    const messages = new Map<number, string>([
      [5, from(6)],
      [9, from(1)],
    ]);
    const r = await classifyMailbox({
      filter,
      cache: null,
      account: "a",
      mailbox: "INBOX",
      runner: new FakeUpstream(messages),
      uids: [5, 9],
      uidValidity: 1,
    });
    expect([...r.visible.uids()]).toEqual([5]);
  });
});

describe("the rule that hid each message (docs/filtering.md, Probes)", () => {
  const RULES: RuleSpec[] = [
    { name: "Hide the boss", folders: ["INBOX"], from: ["boss@*"], action: "deny", operations: ["read"] },
    { name: "Archive only", folders: ["Archive"], action: "allow", operations: ["read"] },
    ...SEED_RULES,
  ];
  const filter = messageFilter(compilePolicy(RULES), "INBOX", null)!;
  /** uid % 3: 0 notifications (visible), 1 the boss, 2 spam; UID 7 has two From fields (unreadable). */
  const messages = new Map<number, string>();
  for (let uid = 1; uid <= 30; uid++) {
    const from = ["notifications@shop.test", "boss@corp.test", "spam@evil.test"][uid % 3]!;
    messages.set(uid, uid === 7 ? "From: a@b.test\r\nFrom: c@d.test\r\n\r\n" : `From: ${from}\r\n\r\n`);
  }
  const uids = [...messages.keys()];
  const hiddenUids = uids.filter((u) => u % 3 !== 0);
  const slotOf = (uid: number) => (uid === 7 ? NO_HIDING_RULE : uid % 3 === 1 ? 0 : 2);

  test("slots are positions among the rules that can decide in the folder; no rule is NO_HIDING_RULE", async () => {
    // "Archive only" cannot decide in INBOX: not a slot. The list ends at the first rule without message conditions.
    expect(filter.rules).toEqual([
      { name: "Hide the boss", index: 0 },
      { name: "Transactional emails from known senders", index: 2 },
      { name: "Deny everything else", index: 3 },
    ]);
    const r = await classifyVerdicts(new FakeUpstream(messages), filter, uids, undefined, 7);
    expect([...r.visible]).toEqual(uids.filter((u) => u % 3 === 0));
    expect([...r.hidden.uids]).toEqual(hiddenUids);
    expect([...r.hidden.slots]).toEqual(hiddenUids.map(slotOf));
  });

  test("the cache keeps hidden UIDs and slots; a row whose hidden part does not check out is a miss", async () => {
    const dir = mkdtempSync(join(tmpdir(), "mailgator-classify-"));
    try {
      const path = join(dir, "mailgator-cache.db");
      const logged: string[] = [];
      const cache = ClassificationCache.open(path, (m) => logged.push(m))!;
      const base = { filter, cache, account: "imap.test:993/me", mailbox: "INBOX", uids, uidValidity: 3 };
      await classifyMailbox({ ...base, runner: new FakeUpstream(messages) });
      const up = new FakeUpstream(messages);
      const again = await classifyMailbox({ ...base, runner: up, uids: uids.filter((u) => u !== 8) });
      expect(again.fromCache).toBe(true);
      expect(up.commands.length).toBe(0);
      const kept = hiddenUids.filter((u) => u !== 8); // expunged meanwhile
      expect([...again.visible.hidden().uids]).toEqual(kept);
      expect([...again.visible.hidden().slots]).toEqual(kept.map(slotOf));
      cache.close();

      const db = new Database(path);
      db.exec("UPDATE visibility SET hidden_slots = x'0000'");
      db.close();
      const reopened = ClassificationCache.open(path, (m) => logged.push(m))!;
      const fresh = await classifyMailbox({ ...base, cache: reopened, runner: new FakeUpstream(messages) });
      expect(fresh.fromCache).toBe(false);
      expect(logged.join("\n")).toMatch(/invalid/);
      reopened.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("what counts as a message's answer (RFC 9051 §7.5.2)", () => {
  const headerOf = (from: string) =>
    ({
      name: "BODY[]",
      section: { part: [], text: "HEADER.FIELDS", fields: ["FROM"] },
      origin: null,
      data: bytes(`From: ${from}\r\n\r\n`),
    }) as const;
  /** An upstream that answers the classification FETCH with `responses` as they are. */
  const answering = (responses: Response[]): UpstreamRunner => ({
    async run(_command: UpstreamCommand, onData: (r: Response) => void): Promise<StatusResponse> {
      for (const r of responses) onData(r);
      return { type: "status", tag: "M1", status: "OK", code: null, text: "done" };
    },
  });
  const corp = compilePolicy([
    { name: "corp", folders: ["INBOX"], from: ["*@corp.test"], action: "allow", operations: ["read"] },
    { name: "deny", action: "deny" },
  ]);

  test("a flag update with the UID, after the header, does not decide in its place", async () => {
    const filter = messageFilter(corp, "INBOX", null)!;
    const r = await classifyVerdicts(
      answering([
        { type: "FETCH", seq: 1, attrs: [{ name: "UID", value: 7 }, headerOf("a@corp.test")] },
        {
          type: "FETCH",
          seq: 1,
          attrs: [
            { name: "UID", value: 7 },
            { name: "FLAGS", flags: ["\\Seen"] },
          ],
        },
      ] as Response[]),
      filter,
      [7],
    );
    expect([...r.visible]).toEqual([7]);
    expect([...r.hidden.uids]).toEqual([]);
  });

  test("decided on its first whole answer: a repeat or an item not asked for changes nothing", async () => {
    const filter = messageFilter(corp, "INBOX", null)!;
    const stats = { commands: 0, messages: 0 };
    const nilStructure = { name: "BODYSTRUCTURE", value: { type: "nil" } } as const;
    const r = await classifyVerdicts(
      answering([
        { type: "FETCH", seq: 1, attrs: [{ name: "UID", value: 7 }, headerOf("a@corp.test")] },
        { type: "FETCH", seq: 1, attrs: [{ name: "UID", value: 7 }, headerOf("x@elsewhere.test")] },
        { type: "FETCH", seq: 1, attrs: [{ name: "UID", value: 7 }, nilStructure] },
      ] as unknown as Response[]),
      filter,
      [7],
      stats,
    );
    expect([...r.visible]).toEqual([7]);
    expect(stats.messages).toBe(1);
  });

  test("one message's header and structure in two responses are read together; what never comes denies", async () => {
    const both = compilePolicy([
      {
        name: "corp, no files",
        folders: ["INBOX"],
        from: ["*@corp.test"],
        hasAttachment: false,
        action: "allow",
        operations: ["read"],
      },
      { name: "deny", action: "deny" },
    ]);
    const filter = messageFilter(both, "INBOX", null)!;
    const str = (v: string): Value => ({ type: "string", value: bytes(v) });
    const num = (v: number): Value => ({ type: "number", value: v });
    const nil: Value = { type: "nil" };
    const plain: Value = {
      type: "list",
      value: [str("text"), str("plain"), nil, nil, nil, str("7bit"), num(10), num(1), nil, nil, nil, nil],
    };
    const text = { name: "BODYSTRUCTURE", value: plain } as const;
    const r = await classifyVerdicts(
      answering([
        { type: "FETCH", seq: 1, attrs: [{ name: "UID", value: 7 }, headerOf("a@corp.test")] },
        { type: "FETCH", seq: 2, attrs: [{ name: "UID", value: 8 }, headerOf("b@corp.test")] },
        { type: "FETCH", seq: 1, attrs: [{ name: "UID", value: 7 }, text] },
      ] as unknown as Response[]),
      filter,
      [7, 8],
    );
    expect([...r.visible]).toEqual([7]);
    expect([...r.hidden.uids]).toEqual([8]);
  });
});
