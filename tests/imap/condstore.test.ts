/**
 * CONDSTORE (RFC 7162 §3.1) through the proxy against the real Dovecot (docs/protocol.md §2). "Own" is unfiltered:
 * mod-sequences are upstream's, and imapflow (which enables CONDSTORE when offered) must see what it sees talking to
 * Dovecot directly. INBOX is filtered (only notifications@ senders are visible): it answers `[NOMODSEQ]`, its
 * HIGHESTMODSEQ is 0 everywhere, every command naming mod-sequences is BAD, and a hidden message's flag change
 * reaches the agent in no form, although it moves upstream's HIGHESTMODSEQ.
 */

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { ImapFlow } from "imapflow";
import { authCapabilities } from "../../src/imap/capabilities.ts";
import { connectImap, createMailbox, type TestMailbox, upstreams } from "../fixtures/index.ts";
import { type Expected, expected, expectNoLeak, FILTERED_INBOX_AND_OWN_RULES, rawMessage } from "./filtered-fixture.ts";
import { proxyClient, RawImap, startTestProxy, statusOf, type TestProxy, upstreamState } from "./helpers.ts";

const RULES = FILTERED_INBOX_AND_OWN_RULES;

let mailbox: TestMailbox;
let proxy: TestProxy;
let e: Expected;

async function agent(): Promise<RawImap> {
  return RawImap.login(proxy.port, mailbox);
}

/** Dovecot itself, over a raw socket: the reference answers. */
async function direct(): Promise<RawImap> {
  return RawImap.login(upstreams().ports.imap, mailbox);
}

/** `* n FETCH (... MODSEQ (m) ...)` → n → m. */
function modseqs(bytes: string): Map<number, number> {
  const out = new Map<number, number>();
  for (const m of bytes.matchAll(/\* (\d+) FETCH \([^\r\n]*?MODSEQ \((\d+)\)/g)) out.set(Number(m[1]), Number(m[2]));
  return out;
}

function highest(bytes: string): number | null {
  const m = /\[HIGHESTMODSEQ (\d+)\]/.exec(bytes);
  return m === null ? null : Number(m[1]);
}

/** Sets `flag` on the messages `set` (UIDs) of `folder`, as the human's own client would. */
async function humanFlag(folder: string, set: string, flag: string): Promise<void> {
  const client = await connectImap(mailbox);
  try {
    await client.mailboxOpen(folder);
    await client.messageFlagsAdd(set, [flag], { uid: true });
  } finally {
    await client.logout();
  }
}

async function upstreamHighest(folder: string): Promise<bigint> {
  const client = await connectImap(mailbox);
  try {
    const status = await client.status(folder, { highestModseq: true });
    if (status === false) throw new Error("STATUS failed");
    return BigInt(status.highestModseq ?? 0);
  } finally {
    await client.logout();
  }
}

beforeAll(async () => {
  mailbox = await createMailbox({ seed: { folders: { INBOX: 40 }, seed: 71 } });
  const human = await connectImap(mailbox);
  await human.mailboxCreate("Own");
  for (let i = 1; i <= 6; i++) {
    await human.append("Own", rawMessage("me@mailgator.test", `own message ${i}`, `own${i}`), []);
  }
  await human.logout();
  e = expected(mailbox.manifest.folders["INBOX"]!);
  expect(e.visible.length).toBeGreaterThan(5);
  expect(e.hidden.length).toBeGreaterThan(5);
  proxy = await startTestProxy({ rules: RULES });
});

afterAll(async () => {
  await proxy?.close();
});

describe("capability", () => {
  test("CONDSTORE is offered after login when upstream offers it (Dovecot does), never before", async () => {
    const raw = await RawImap.open(proxy.port);
    expect(await raw.command("a", "CAPABILITY")).not.toContain("CONDSTORE");
    const login = await raw.command("L", `LOGIN "${mailbox.user}" "${mailbox.password}"`);
    expect(statusOf(login, "L")).toMatch(/^L OK \[CAPABILITY [^\]]*\bCONDSTORE\b/);
    raw.close();
    expect(authCapabilities(new Set(["IMAP4REV1", "UIDPLUS"]))).not.toContain("CONDSTORE");
    expect(authCapabilities(null)).not.toContain("CONDSTORE");
    expect(authCapabilities(new Set(["CONDSTORE"]))).toContain("CONDSTORE");
  });

  test("ENABLE CONDSTORE answers ENABLED CONDSTORE once, and nothing for what is not offered", async () => {
    const raw = await agent();
    expect(await raw.command("a", "ENABLE CONDSTORE UTF8=ACCEPT QRESYNC")).toStartWith("* ENABLED CONDSTORE\r\n");
    expect(await raw.command("b", "ENABLE CONDSTORE")).toStartWith("* ENABLED\r\n");
    raw.close();
  });
});

describe("an unfiltered folder: upstream's mod-sequences", () => {
  test("imapflow enables CONDSTORE and sees HIGHESTMODSEQ, MODSEQ and CHANGEDSINCE exactly as directly", async () => {
    const viaProxy: ImapFlow = await proxyClient(proxy.port, mailbox.user, mailbox.password);
    const viaDovecot: ImapFlow = await connectImap(mailbox);
    try {
      expect(viaProxy.enabled.has("CONDSTORE")).toBe(true);
      const a = await viaProxy.mailboxOpen("Own", { readOnly: true });
      const b = await viaDovecot.mailboxOpen("Own", { readOnly: true });
      expect(typeof a.highestModseq).toBe("bigint");
      expect(a.highestModseq).toBe(b.highestModseq!);
      const since = a.highestModseq!;
      const own = (await viaDovecot.search({ all: true }, { uid: true })) as number[];
      await humanFlag("Own", `${own[1]},${own[4]}`, "\\Flagged");
      const changed = async (c: ImapFlow) => {
        const out: string[] = [];
        for await (const m of c.fetch("1:*", { uid: true, flags: true }, { changedSince: since }))
          out.push(`${m.seq} ${m.uid} ${m.modseq} ${[...(m.flags ?? [])].sort().join(" ")}`);
        return out;
      };
      const got = await changed(viaProxy);
      const uids = (await viaProxy.search({ all: true }, { uid: true })) as number[];
      for (const uid of [uids[1], uids[4]]) {
        expect(got.find((l) => l.split(" ")[1] === String(uid))).toContain("\\Flagged");
      }
      expect(got.length).toBeLessThan(uids.length);
      expect(got).toEqual(await changed(viaDovecot));
      const all = async (c: ImapFlow) => {
        const out: string[] = [];
        for await (const m of c.fetch("1:*", { uid: true })) out.push(`${m.uid} ${m.modseq}`);
        return out;
      };
      expect(await all(viaProxy)).toEqual(await all(viaDovecot));
      const s1 = await viaProxy.status("INBOX", { highestModseq: true, messages: true });
      if (s1 === false) throw new Error("STATUS failed");
      expect(BigInt(s1.highestModseq ?? -1)).toBe(0n);
      expect(s1.messages).toBe(e.visible.length);
    } finally {
      await viaProxy.logout();
      await viaDovecot.logout();
    }
  });

  test("SELECT (CONDSTORE), FETCH MODSEQ, SEARCH MODSEQ and STATUS HIGHESTMODSEQ equal Dovecot's answers", async () => {
    const raw = await agent();
    const ref = await direct();
    try {
      const sel = await raw.command("s", "EXAMINE Own (CONDSTORE)");
      const refSel = await ref.command("s", "EXAMINE Own (CONDSTORE)");
      expect(highest(sel)).not.toBeNull();
      expect(highest(sel)).toBe(highest(refSel));
      const f = await raw.command("f", "FETCH 1:* (UID MODSEQ)");
      expect(modseqs(f)).toEqual(modseqs(await ref.command("f", "FETCH 1:* (UID MODSEQ)")));
      const low = Math.min(...modseqs(f).values()) + 1;
      for (const q of [`SEARCH MODSEQ ${low}`, `UID SEARCH MODSEQ ${low}`, `SEARCH RETURN (MIN MAX) MODSEQ ${low}`]) {
        const mine = (await raw.command("q", q)).split("\r\n")[0];
        const theirs = (await ref.command("q", q)).split("\r\n")[0];
        expect(mine).toMatch(/MODSEQ \d+/);
        expect(mine).toBe(theirs!);
      }
      const st = await raw.command("t", "STATUS Own (MESSAGES HIGHESTMODSEQ)");
      expect(st.split("\r\n")[0]).toBe(
        (await ref.command("t", "STATUS Own (MESSAGES HIGHESTMODSEQ)")).split("\r\n")[0]!,
      );
    } finally {
      raw.close();
      ref.close();
    }
  });

  test("LIST-STATUS with HIGHESTMODSEQ enables CONDSTORE, as STATUS does and as Dovecot does", async () => {
    const raw = await agent();
    const ref = await direct();
    try {
      const list = 'LIST "" "Own" RETURN (STATUS (MESSAGES HIGHESTMODSEQ))';
      const mine = await raw.command("l", list);
      const theirs = await ref.command("l", list);
      expect(mine).toMatch(/\* STATUS "?Own"? \(MESSAGES 6 HIGHESTMODSEQ \d+\)/);
      const statusLine = (bytes: string) => bytes.split("\r\n").find((l) => l.startsWith("* STATUS "));
      expect(statusLine(mine)).toBe(statusLine(theirs)!);
      // Enabled: SELECT reports HIGHESTMODSEQ and a flag change carries MODSEQ (RFC 7162 §3.1.2.1, §3.1.4).
      const sel = await raw.command("s", "SELECT Own");
      const refSel = await ref.command("s", "SELECT Own");
      expect(highest(refSel)).not.toBeNull();
      expect(highest(sel)).toBe(highest(refSel));
      const st = await raw.command("a", "STORE 1 +FLAGS (\\Flagged)");
      expect(st).toMatch(/\* 1 FETCH \([^\r\n]*MODSEQ \(\d+\)/);
      const refSt = await ref.command("a", "STORE 1 -FLAGS (\\Flagged)");
      expect(refSt).toMatch(/\* 1 FETCH \([^\r\n]*MODSEQ \(\d+\)/);
    } finally {
      raw.close();
      ref.close();
    }
  });

  test("enabled by STATUS or LIST-STATUS, a folder selected: [HIGHESTMODSEQ] follows, as from Dovecot", async () => {
    for (const command of ['LIST "" "INBOX" RETURN (STATUS (HIGHESTMODSEQ))', "STATUS INBOX (HIGHESTMODSEQ)"]) {
      const raw = await agent();
      const ref = await direct();
      try {
        expect(statusOf(await raw.command("s", "SELECT Own"), "s")).toStartWith("s OK");
        expect(statusOf(await ref.command("s", "SELECT Own"), "s")).toStartWith("s OK");
        const mine = await raw.command("c", command);
        const theirs = await ref.command("c", command);
        expect(highest(theirs), command).not.toBeNull();
        expect(highest(mine), command).toBe(highest(theirs));
      } finally {
        raw.close();
        ref.close();
      }
    }
  });

  test("a FETCH or STORE naming mod-sequences and no message still enables CONDSTORE, as at Dovecot", async () => {
    // RFC 7162 §3.1: each of these is a CONDSTORE enabling command whatever its set names; a folder selected gets
    // `* OK [HIGHESTMODSEQ n]`, and every later untagged FETCH carries MODSEQ (§3.1.4). A set naming no message
    // the agent knows (a UID past the last) sends nothing upstream, so the proxy enables CONDSTORE there itself.
    const commands = [
      "UID FETCH 999 (MODSEQ)",
      "UID FETCH 999 (FLAGS) (CHANGEDSINCE 1)",
      "UID STORE 999 (UNCHANGEDSINCE 1) +FLAGS (\\Answered)",
    ];
    for (const command of commands) {
      const raw = await agent();
      const ref = await direct();
      try {
        expect(statusOf(await raw.command("s", "SELECT Own"), "s")).toStartWith("s OK");
        expect(statusOf(await ref.command("s", "SELECT Own"), "s")).toStartWith("s OK");
        const theirs = await ref.command("c", command);
        const mine = await raw.command("c", command);
        expect(statusOf(mine, "c"), command).toStartWith("c OK");
        expect(highest(theirs), command).not.toBeNull();
        expect(highest(mine), command).toBe(highest(theirs));
        // The flag set directly, then cleared through the proxy: Own's messages are as they were.
        const refStore = await ref.command("f", "STORE 1 +FLAGS (\\Flagged)");
        const store = await raw.command("f", "STORE 1 -FLAGS (\\Flagged)");
        expect(refStore, command).toMatch(/\* 1 FETCH \([^\r\n]*MODSEQ \(\d+\)/);
        expect(store, command).toMatch(/\* 1 FETCH \([^\r\n]*MODSEQ \(\d+\)/);
      } finally {
        raw.close();
        ref.close();
      }
    }
  });

  test("STORE UNCHANGEDSINCE: MODIFIED in the agent's numbers, the others stored; FETCH carries MODSEQ", async () => {
    const raw = await agent();
    try {
      expect(await raw.command("e", "ENABLE CONDSTORE")).toContain("e OK");
      const sel = await raw.command("s", "SELECT Own");
      const top = highest(sel)!;
      expect(top).toBeGreaterThan(0);
      const f = await raw.command("f", "UID FETCH 1:* (MODSEQ)");
      const uids = [...f.matchAll(/UID (\d+)/g)].map((m) => Number(m[1]));
      expect(uids.length).toBe(6);
      // The human changes message 3 after the agent read its mod-sequences.
      await humanFlag("Own", String(uids[2]), "$Human");
      const before = await upstreamState(mailbox);
      const st = await raw.command("a", `STORE 2:4 (UNCHANGEDSINCE ${top}) +FLAGS (\\Answered)`);
      expect(statusOf(st, "a")).toMatch(/^a OK \[MODIFIED 3\] /);
      for (const n of [2, 4]) {
        const fetched = st.split("\r\n").find((l) => l.startsWith(`* ${n} FETCH (`)) ?? "";
        expect(fetched).toContain("\\Answered");
        expect(fetched).toMatch(/MODSEQ \(\d+\)/);
      }
      expect(st).not.toMatch(/\* 3 FETCH \([^\r\n]*\\Answered/);
      expect(modseqs(st).size).toBeGreaterThanOrEqual(2);
      const ust = await raw.command("b", `UID STORE ${uids[0]}:${uids[2]} (UNCHANGEDSINCE ${top}) +FLAGS (\\Draft)`);
      // Messages 2 and 3 changed since `top` (the agent's STORE above, the human's): both are MODIFIED, as UIDs.
      expect(statusOf(ust, "b")).toMatch(new RegExp(`^b OK \\[MODIFIED ${uids[1]}:${uids[2]}\\] `));
      const after = await upstreamState(mailbox);
      const flags = (s: typeof after, uid: number) =>
        s.messages["Own"]!.uids.find((u) => u.split(" ")[0] === String(uid))!;
      expect(flags(before, uids[2]!)).toBe(flags(after, uids[2]!));
      expect(flags(after, uids[1]!)).toContain("\\Answered");
      expect(flags(after, uids[3]!)).toContain("\\Answered");
      expect(flags(after, uids[0]!)).toContain("\\Draft");
      expect(flags(after, uids[2]!)).not.toContain("\\Answered");
      // After ENABLE, another session's flag change arrives with its MODSEQ (RFC 7162 §3.1.4).
      await humanFlag("Own", String(uids[5]), "\\Seen");
      const noop = await raw.command("n", "NOOP");
      expect(noop).toMatch(/\* 6 FETCH \([^\r\n]*MODSEQ \(\d+\)/);
    } finally {
      raw.close();
    }
  });
});

describe("a filtered folder: NOMODSEQ, and no mod-sequence side channel", () => {
  test("SELECT and EXAMINE answer [NOMODSEQ] and no HIGHESTMODSEQ; every MODSEQ command is BAD", async () => {
    const raw = await agent();
    const before = await upstreamState(mailbox);
    let seen = "";
    try {
      seen += await raw.command("e", "ENABLE CONDSTORE");
      const sel = await raw.command("s", "SELECT INBOX (CONDSTORE)");
      seen += sel;
      expect(sel).toContain("* OK [NOMODSEQ]");
      expect(sel).toContain(`* ${e.visible.length} EXISTS`);
      expect(statusOf(sel, "s")).toStartWith("s OK");
      const ex = await raw.command("x", "EXAMINE INBOX");
      seen += ex;
      expect(ex).toContain("* OK [NOMODSEQ]");
      for (const [tag, cmd] of [
        ["a", "FETCH 1 (MODSEQ)"],
        ["b", "UID FETCH 1:* (FLAGS MODSEQ)"],
        ["c", "FETCH 1:* (FLAGS) (CHANGEDSINCE 1)"],
        ["d", "UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1)"],
        ["f", "STORE 1 (UNCHANGEDSINCE 1000000) +FLAGS (\\Flagged)"],
        ["g", "UID STORE 1:* (UNCHANGEDSINCE 0) +FLAGS (\\Flagged)"],
        ["h", "SEARCH MODSEQ 1"],
        ["i", "UID SEARCH RETURN (COUNT) OR SEEN MODSEQ 1"],
        ["j", 'SEARCH MODSEQ "/flags/\\\\seen" all 1'],
      ] as const) {
        const reply = await raw.command(tag, cmd);
        seen += reply;
        expect(statusOf(reply, tag)).toStartWith(`${tag} BAD`);
      }
      expect(await upstreamState(mailbox)).toEqual(before);
      expectNoLeak(seen, e);
    } finally {
      raw.close();
    }
  });

  test("HIGHESTMODSEQ is 0 in STATUS and LIST-STATUS, before and after a hidden message changes upstream", async () => {
    const raw = await agent();
    const status = async () => {
      const st = await raw.command("t", "STATUS INBOX (HIGHESTMODSEQ MESSAGES)");
      const ls = await raw.command("l", 'LIST "" "*" RETURN (STATUS (HIGHESTMODSEQ))');
      expectNoLeak(st.replace(/HIGHESTMODSEQ 0\b/g, ""), e);
      return [st.split("\r\n")[0], ls.split("\r\n").find((l) => l.startsWith("* STATUS INBOX"))];
    };
    try {
      const first = await status();
      expect(first).toEqual([
        `* STATUS INBOX (HIGHESTMODSEQ 0 MESSAGES ${e.visible.length})`,
        "* STATUS INBOX (HIGHESTMODSEQ 0)",
      ]);
      const upBefore = await upstreamHighest("INBOX");
      await humanFlag("INBOX", String(e.hidden[0]!.uid), "$Probe1");
      expect(await upstreamHighest("INBOX")).toBeGreaterThan(upBefore);
      expect(await status()).toEqual(first);
      // Selected, the same from the model.
      await raw.command("s", "SELECT INBOX");
      expect(await status()).toEqual(first);
    } finally {
      raw.close();
    }
  });

  test("a hidden message's flag change reaches the agent in no form; a visible one's without MODSEQ", async () => {
    const raw = await agent();
    try {
      let seen = await raw.command("e", "ENABLE CONDSTORE");
      seen += await raw.command("s", "SELECT INBOX");
      await humanFlag("INBOX", String(e.hidden[1]!.uid), "$Probe2");
      await humanFlag("INBOX", String(e.hidden[2]!.uid), "\\Answered");
      const quiet = await raw.command("n", "NOOP");
      expect(quiet.split("\r\n").filter((l) => l.startsWith("*"))).toEqual([]);
      const visible = e.visible.find((m) => !m.flags.includes("\\Answered"))!;
      await humanFlag("INBOX", String(visible.uid), "\\Answered");
      const told = await raw.command("m", "NOOP");
      const seq = e.visibleUids.indexOf(visible.uid) + 1;
      expect(told).toMatch(new RegExp(`^\\* ${seq} FETCH \\(FLAGS \\([^)]*\\\\Answered`));
      seen += quiet + told;
      expectNoLeak(seen, e);
    } finally {
      raw.close();
    }
  });

  test("imapflow honours NOMODSEQ: no highestModseq, FETCH works without MODSEQ", async () => {
    const client = await proxyClient(proxy.port, mailbox.user, mailbox.password);
    try {
      expect(client.enabled.has("CONDSTORE")).toBe(true);
      const box = await client.mailboxOpen("INBOX", { readOnly: true });
      expect(box.noModseq).toBe(true);
      expect(box.highestModseq).toBeUndefined();
      const got: number[] = [];
      for await (const m of client.fetch("1:*", { uid: true, flags: true })) {
        expect(m.modseq).toBeUndefined();
        got.push(m.uid);
      }
      expect(got).toEqual([...e.visibleUids]);
    } finally {
      await client.logout();
    }
  });
});

describe("a hidden folder: a CONDSTORE enabling command answers and enables as for an absent one", () => {
  test("SELECT (CONDSTORE) and STATUS (HIGHESTMODSEQ) of a hidden name enable as of an absent name", async () => {
    // Dovecot enables CONDSTORE even when such a command names no mailbox: the next SELECT carries HIGHESTMODSEQ.
    // The proxy does the same for a name it allows (`Own/Nowhere`); a hidden name must leave the session in the same
    // state, or the next SELECT would tell a name the rules hide from one that does not exist (docs/protocol.md §0.5).
    const human = await connectImap(mailbox);
    await human.mailboxCreate("Secret");
    await human.logout();
    const rules = RULES.replace(`folders = ["Own"]`, `folders = ["Own", "Own/*"]`);
    expect(rules).not.toBe(RULES);
    const wide = await startTestProxy({ rules });
    try {
      for (const first of ["SELECT % (CONDSTORE)", "EXAMINE % (CONDSTORE)", "STATUS % (HIGHESTMODSEQ)"]) {
        const replies: string[] = [];
        for (const name of ["Own/Nowhere", "Secret"]) {
          const raw = await RawImap.login(wide.port, mailbox);
          const reply = await raw.command("a", first.replace("%", name));
          expect(reply).toBe("a NO [NONEXISTENT] Mailbox does not exist\r\n");
          const select = await raw.command("b", "SELECT Own");
          expect(statusOf(select, "b")).toStartWith("b OK");
          replies.push(`${reply}${highest(select) === null ? "no HIGHESTMODSEQ" : "HIGHESTMODSEQ"}`);
          raw.close();
        }
        expect(replies[1]).toBe(replies[0]!);
        expect(replies[0]).toEndWith("\r\nHIGHESTMODSEQ");
      }
      // An item no STATUS takes is refused before the name is looked at, for both alike.
      for (const name of ["Own/Nowhere", "Secret"]) {
        const raw = await RawImap.login(wide.port, mailbox);
        expect(statusOf(await raw.command("a", `STATUS ${name} (MESSAGES SIZE)`), "a")).toStartWith("a BAD");
        raw.close();
      }
    } finally {
      await wide.close();
    }
  });
});
