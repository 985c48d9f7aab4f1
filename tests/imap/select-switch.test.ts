/**
 * A SELECT while another folder is selected closes that folder upstream, and the responses the server still sends of
 * it come before the new folder's. Only a `* OK [CLOSED]` between them says where the new folder's begin (RFC 9051
 * §7.1), and a server owes one only under IMAP4rev2 or when it offers QRESYNC and the folder is another one (RFC 9051
 * §6.3.2, §7.2.2; RFC 7162 §3.2.11; `UpstreamSession.closedAtSelect`). Elsewhere the proxy closes the folder with
 * UNSELECT first and pipelines the SELECT behind it, so that UNSELECT's tagged reply is the boundary at no extra round
 * trip (before, the SELECT waited for that reply); a server that leaves out a `[CLOSED]` it owed gets the SELECT
 * refused, and its UNSELECT answered before the next SELECT goes (docs/imap.md "Switching folders"). Against
 * Dovecot, which offers QRESYNC and sends `[CLOSED]`, through a relay that takes QRESYNC out of its capabilities and
 * its `[CLOSED]` out of its answers, adds what a server may say of the folder it closes, answers or refuses in its
 * place, and counts the proxy's commands (tests/fixtures/tcp-relay.ts).
 */

import { afterAll, beforeAll, expect, test } from "bun:test";
import { connectImap, createMailbox, type TestMailbox } from "../fixtures/index.ts";
import { LineRelay, UPSTREAM_REFUSALS } from "../fixtures/tcp-relay.ts";
import {
  auditCursor,
  BOX_SHOP_RULES,
  dovecotImap,
  fromMessage,
  RawImap,
  startRelayedProxy,
  statusOf,
  type TestProxy,
  withoutUnseen,
} from "./helpers.ts";

/** What a server may say of Box as it closes it: a hidden message's keyword and flags, counts, its next UID. */
const BOX_LEFTOVERS =
  "* FLAGS (\\Seen $HiddenKeyword)\r\n* 1 FETCH (FLAGS (\\Seen $HiddenKeyword))\r\n* 7 RECENT\r\n* 9 EXISTS\r\n" +
  "* OK [UIDNEXT 999] Predicted\r\n";
const LEFTOVER_WORDS = ["$HiddenKeyword", "FETCH", "7 RECENT", "9 EXISTS", "UIDNEXT 999"];

/** Upstream's first line of its answer to the proxy's next command, whichever it is: UNSELECT's OK or the FLAGS. */
const NEXT_ANSWER = /^(\* FLAGS |\S+ OK Unselect)/;

/** The proxy's commands when it leaves Box for Open where no `[CLOSED]` is owed: all three sent together. */
const PIPELINED = ["UNSELECT", "EXAMINE Open", "UID SEARCH ALL"];

/** What opening the filtered Box asks upstream after its SELECT: its first unseen and its recent visible messages. */
const BOX_SEARCHES = ["|", "UID SEARCH UNSEEN", "|", "UID SEARCH RECENT"];

/** A folder whose name goes upstream as a literal (a quoted string holds no `"`, src/imap/wire/encoder.ts). */
const QUOTED = 'Say "hi"';

/** The SELECT tests' rules, and the quoted folder shown as it is. */
const RULES = `
[[rules]]
name = "quoted"
folders = ['${QUOTED}']
action = "allow"
operations = ["read"]
${BOX_SHOP_RULES}`;

/** The capability lists of servers that owe no `[CLOSED]` to the proxy, made of Dovecot's. */
const WITHOUT_CLOSED = [
  ["neither QRESYNC nor IMAP4rev2 (RFC 3501)", (caps: string) => withoutQresync(caps)],
  [
    "IMAP4rev2 beside IMAP4rev1, never enabled",
    (caps: string) => withoutQresync(caps).replace("IMAP4rev1", "IMAP4rev1 IMAP4rev2"),
  ],
] as const;

let relay: LineRelay;
let proxy: TestProxy;
let mailbox: TestMailbox;
let rows: ReturnType<typeof auditCursor>;

function withoutQresync(line: string): string {
  return line.replace(/ QRESYNC(?=[ \]])/, "");
}

beforeAll(async () => {
  mailbox = await createMailbox({ name: "select-switch" });
  const human = await connectImap(mailbox);
  for (const folder of ["Box", "Open", QUOTED]) await human.mailboxCreate(folder);
  await human.append("Box", fromMessage("bank@corp.test", "hidden-statement"), ["$HiddenKeyword"]);
  await human.append("Box", fromMessage("shop@s.test", "order"));
  await human.append("Open", fromMessage("shop@s.test", "receipt"));
  await human.logout();
  relay = await LineRelay.start(dovecotImap());
  proxy = await startRelayedProxy(relay, RULES);
  rows = auditCursor(proxy);
});

afterAll(async () => {
  await proxy?.close();
  await relay?.close();
});

/** Logs in with the server's capabilities as `caps` makes them; returns the agent's session. */
async function login(caps: (line: string) => string = (line) => line): Promise<RawImap> {
  const stop = relay.rewriteEvery(/\[CAPABILITY /, caps);
  try {
    return await RawImap.login(proxy.port, mailbox);
  } finally {
    stop();
  }
}

/** Open's answer with nothing selected before, from a new session (CONDSTORE enabled first if asked), tagged `o`. */
async function plainOpen(condstore = false): Promise<string> {
  const raw = await login();
  try {
    if (condstore) expect(statusOf(await raw.command("e", "ENABLE CONDSTORE"), "e")).toStartWith("e OK");
    return await raw.command("o", "SELECT Open");
  } finally {
    raw.close();
  }
}

for (const [name, caps] of WITHOUT_CLOSED) {
  test(`${name}: UNSELECT with the SELECT pipelined; nothing of the folder closed reaches the agent`, async () => {
    const plain = await plainOpen();
    // Such a server sends no [CLOSED]; Dovecot sends none after an UNSELECT anyway.
    const noClosed = relay.rewriteEvery(/^\* OK \[CLOSED\]/, () => "");
    const raw = await login(caps);
    try {
      expect(statusOf(await raw.command("b", "SELECT Box"), "b")).toStartWith("b OK");
      const mark = relay.transcript.length;
      // What it still says of Box comes first in its answer to the proxy's next command (before UNSELECT's OK, by
      // then behind the EXAMINE already sent; on a SELECT sent without UNSELECT, before Open's FLAGS, where nothing
      // tells it from Open's own).
      const added = relay.rewrite(NEXT_ANSWER, (line) => `${BOX_LEFTOVERS}${line}`);
      const reply = await raw.command("o", "SELECT Open");
      await added;
      for (const word of LEFTOVER_WORDS) expect(reply).not.toContain(word);
      // Open's own answer; its first unseen left out after the filtered Box.
      expect(reply).toBe(withoutUnseen(plain));
      // The EXAMINE reached upstream before UNSELECT's OK came back: no round trip between them.
      expect(relay.commandsSince(mark)).toEqual(PIPELINED);
      const lines = relay.transcript.slice(mark).map((l) => l.line);
      const unselected = lines.findIndex((line) => /^\S+ OK Unselect/.test(line));
      expect(lines.findIndex((line) => line.endsWith(" EXAMINE Open\r\n"))).toBeLessThan(unselected);
      // The folder opened is Open, as it is.
      const fetched = await raw.command("f", "FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])");
      expect(statusOf(fetched, "f")).toStartWith("f OK");
      expect(fetched).toContain("Subject: receipt");
    } finally {
      raw.close();
      noClosed();
      relay.clear();
    }
  });
}

/** Logs in to a server that owes no `[CLOSED]` and selects Box; returns the session, and the transcript's mark. */
async function inBox(): Promise<{ raw: RawImap; mark: number }> {
  const raw = await login(withoutQresync);
  expect(statusOf(await raw.command("b", "SELECT Box"), "b")).toStartWith("b OK");
  await rows();
  return { raw, mark: relay.transcript.length };
}

/** The SELECT's own rows of the session's end: the `error` row naming Box, then Open's allow row, unanswered. */
async function expectEndRows(unselect: string, end: string): Promise<void> {
  const own = (await rows()).filter((r) => r.command === "SELECT");
  expect(own.map((r) => [r.folder, r.decision])).toEqual([
    ["Box", "error"],
    ["Open", "allow"],
  ]);
  expect(own[0]!.reason).toStartWith(`the upstream server kept the mailbox selected: UNSELECT answered ${unselect} `);
  expect(own[1]!.reason).toEndWith(`; no answer: the session ended before upstream answered (${end})`);
}

for (const [status, line] of UPSTREAM_REFUSALS) {
  test(`no [CLOSED] owed, UNSELECT refused ${status}, the folder still open: * BYE, the SELECT unused`, async () => {
    const { raw, mark } = await inBox();
    try {
      const refused = relay.answer(/^\S+ UNSELECT\r\n$/, line);
      raw.write("o SELECT Open\r\n");
      const out = await raw.readUntil(() => false, 5000, "the session was not closed");
      await refused;
      // Dovecot, still in Box, opened Open and answered the EXAMINE: none of it reached the agent.
      expect(out).toBe("* BYE [UNAVAILABLE] The server did not close the mailbox\r\n");
      expect(relay.commandsSince(mark)).toEqual(PIPELINED);
      await expectEndRows(status, "upstream kept a mailbox selected");
    } finally {
      raw.close();
      relay.clear();
    }
  });
}

test("the UNSELECT refused and the SELECT answered NO in the same read: * BYE, the NO not relayed", async () => {
  const { raw, mark } = await inBox();
  try {
    // UNSELECT's OK held back, then sent as a refusal in one write with EXAMINE's tagged reply made a NO: the proxy
    // reads both before it acts on the first, and by then the SELECT's NO says no mailbox is selected upstream.
    let unselectTag = "";
    const held = relay.rewrite(/^\S+ OK Unselect/, (line) => {
      unselectTag = line.split(" ")[0]!;
      return "";
    });
    const refused = relay.rewrite(
      /^\S+ OK \[READ-ONLY\] Examine/,
      (line) => `${unselectTag} NO Not now\r\n${line.split(" ")[0]} NO Examine refused\r\n`,
    );
    raw.write("o SELECT Open\r\n");
    const out = await raw.readUntil(() => false, 5000, "the session was not closed");
    await held;
    await refused;
    expect(out).toBe("* BYE [UNAVAILABLE] The server did not close the mailbox\r\n");
    expect(relay.commandsSince(mark)).toEqual(PIPELINED);
    await expectEndRows("NO", "upstream kept a mailbox selected");
  } finally {
    raw.close();
    relay.clear();
  }
});

test("the upstream connection lost before UNSELECT is answered: * BYE, Open's row unanswered", async () => {
  const { raw, mark } = await inBox();
  try {
    // The three commands never reach Dovecot, and no answer comes; then the connection is cut.
    const seen = [/ UNSELECT\r\n$/, / EXAMINE Open\r\n$/, / UID SEARCH ALL\r\n$/].map((p) => relay.answer(p, () => ""));
    raw.write("o SELECT Open\r\n");
    const all = Promise.all(seen).then(() => true);
    expect(await Promise.race([all, Bun.sleep(5000).then(() => false)])).toBe(true);
    relay.dropLinks();
    const out = await raw.readUntil(() => false, 5000, "the session was not closed");
    expect(out).toBe("* BYE Upstream connection lost\r\n");
    expect(relay.commandsSince(mark)).toEqual(PIPELINED);
    const own = await rows();
    expect(own.map((r) => [r.command, r.folder, r.decision])).toEqual([
      ["(upstream)", null, "error"],
      ["SELECT", "Open", "allow"],
    ]);
    expect(own[1]!.reason).toEndWith(
      "; no answer: the session ended before upstream answered (upstream connection lost)",
    );
  } finally {
    raw.close();
    relay.clear();
  }
});

/**
 * UNSELECT's answer made something else by the relay, the EXAMINE and its search already at Dovecot behind it: the
 * session ends as when the connection is lost. A tagged reply is never taken for another command's (the EXAMINE's,
 * read first, for UNSELECT's, which would make the EXAMINE's responses UNSELECT's and UNSELECT's OK the EXAMINE's),
 * and a BYE in UNSELECT's place ends it at once, the closed folder's responses before it unused.
 */
const UNSELECT_UNANSWERED = [
  [
    "the EXAMINE's tagged reply before UNSELECT's",
    "the upstream server answered a command that was not sent",
    async (): Promise<void> => {
      // UNSELECT's OK held back and sent after the EXAMINE's, whose untagged responses then come first.
      let unselected = "";
      const held = relay.rewrite(/^\S+ OK Unselect/, (line) => {
        unselected = line;
        return "";
      });
      const swapped = relay.rewrite(/^\S+ OK \[READ-ONLY\] Examine/, (line) => `${line}${unselected}`);
      await Promise.all([held, swapped]);
    },
  ],
  [
    "UNSELECT answered by an untagged BYE",
    "the upstream server closed the session: Shutting down",
    () => relay.rewrite(/^\S+ OK Unselect/, () => `${BOX_LEFTOVERS}* BYE Shutting down\r\n`),
  ],
] as const;

for (const [name, why, answer] of UNSELECT_UNANSWERED) {
  test(`no [CLOSED] owed, ${name}: * BYE, nothing of either folder relayed`, async () => {
    const { raw, mark } = await inBox();
    try {
      const answered = answer();
      raw.write("o SELECT Open\r\n");
      const out = await raw.readUntil(() => false, 5000, "the session was not closed");
      await answered;
      expect(out).toBe("* BYE Upstream connection lost\r\n");
      expect(relay.commandsSince(mark)).toEqual(PIPELINED);
      const own = await rows();
      expect(own.map((r) => [r.command, r.folder, r.decision])).toEqual([
        ["(upstream)", null, "error"],
        ["SELECT", "Open", "allow"],
      ]);
      expect(own[0]!.reason).toBe(why);
      expect(own[1]!.reason).toEndWith(
        "; no answer: the session ended before upstream answered (upstream connection lost)",
      );
    } finally {
      raw.close();
      relay.clear();
    }
  });
}

test("no [CLOSED] owed, a name sent as a literal: the SELECT waits for UNSELECT's answer, then opens", async () => {
  const { raw, mark } = await inBox();
  try {
    const reply = await raw.command("q", 'SELECT "Say \\"hi\\""');
    expect(statusOf(reply, "q")).toBe("q OK [READ-ONLY] SELECT completed");
    expect(reply).toContain("* 0 EXISTS");
    // It waits for `+` (its literal's line is `"hi"` here, its first word taken for a tag), so it cannot be
    // pipelined behind UNSELECT: sent once UNSELECT's OK has come, and its search once it is answered, as before.
    expect(relay.commandsSince(mark)).toEqual(["UNSELECT", "|", "EXAMINE {8}", '"hi"', "|", "UID SEARCH ALL"]);
  } finally {
    raw.close();
    relay.clear();
  }
});

test("Dovecot as it is (QRESYNC): another folder in one round trip, what precedes [CLOSED] dropped", async () => {
  const plain = await plainOpen();
  const raw = await login();
  try {
    expect(statusOf(await raw.command("b", "SELECT Box"), "b")).toStartWith("b OK");
    const mark = relay.transcript.length;
    const added = relay.rewrite(/^\* OK \[CLOSED\]/, (line) => `${BOX_LEFTOVERS}${line}`);
    const reply = await raw.command("o", "SELECT Open");
    await added;
    expect(relay.commandsSince(mark)).toEqual(["EXAMINE Open", "UID SEARCH ALL"]);
    expect(reply).toBe(withoutUnseen(plain));
    // And back, to the filtered folder.
    const back = relay.transcript.length;
    expect(statusOf(await raw.command("c", "EXAMINE Box"), "c")).toStartWith("c OK");
    expect(relay.commandsSince(back)).toEqual(["EXAMINE Box", "UID SEARCH ALL", ...BOX_SEARCHES]);
  } finally {
    raw.close();
    relay.clear();
  }
});

test("Dovecot as it is, the same folder again: UNSELECT pipelined (RFC 7162 owes [CLOSED] for another)", async () => {
  const plain = await plainOpen();
  const raw = await login();
  try {
    expect(statusOf(await raw.command("p", "SELECT Open"), "p")).toStartWith("p OK");
    const mark = relay.transcript.length;
    const reply = await raw.command("o", "SELECT Open");
    expect(relay.commandsSince(mark)).toEqual(PIPELINED);
    expect(reply).toBe(plain);
  } finally {
    raw.close();
    relay.clear();
  }
});

test("IMAP4rev2 without IMAP4rev1: [CLOSED] owed at every SELECT, one round trip, the same folder too", async () => {
  const raw = await login((line) => withoutQresync(line).replace("IMAP4rev1", "IMAP4rev2"));
  try {
    expect(statusOf(await raw.command("b", "SELECT Box"), "b")).toStartWith("b OK");
    for (const folder of ["Open", "Open", "Box"]) {
      const mark = relay.transcript.length;
      expect(statusOf(await raw.command("o", `EXAMINE ${folder}`), "o")).toStartWith("o OK");
      const searches = folder === "Box" ? BOX_SEARCHES : [];
      expect(relay.commandsSince(mark)).toEqual([`EXAMINE ${folder}`, "UID SEARCH ALL", ...searches]);
    }
  } finally {
    raw.close();
    relay.clear();
  }
});

test("a [CLOSED] owed and left out: the SELECT is refused, and this session closes folders with UNSELECT", async () => {
  const plain = await plainOpen();
  const raw = await login();
  try {
    expect(statusOf(await raw.command("b", "SELECT Box"), "b")).toStartWith("b OK");
    await rows();
    const mark = relay.transcript.length;
    const dropped = relay.rewrite(/^\* OK \[CLOSED\]/, () => BOX_LEFTOVERS);
    const reply = await raw.command("o", "SELECT Open");
    await dropped;
    expect(reply).toBe("o NO [UNAVAILABLE] The mailbox could not be opened; try again later\r\n");
    expect(relay.commandsSince(mark)).toEqual(["EXAMINE Open", "UID SEARCH ALL", "|", "UNSELECT"]);
    const own = (await rows()).filter((r) => r.command === "SELECT");
    expect(own.map((r) => [r.folder, r.decision, r.rule])).toEqual([["Open", "error", "open"]]);
    expect(own[0]!.reason).toBe(
      "upstream closed the folder selected before without [CLOSED]: its responses and this folder's could not be " +
        "told apart",
    );
    // No folder is selected, here or upstream.
    expect(statusOf(await raw.command("f", "FETCH 1 (FLAGS)"), "f")).toStartWith("f BAD");
    // Tried again: nothing to close, Open as it is.
    const again = relay.transcript.length;
    expect(await raw.command("o", "SELECT Open")).toBe(plain);
    expect(relay.commandsSince(again)).toEqual(["EXAMINE Open", "UID SEARCH ALL"]);
    // This server is not counted on any more: UNSELECT before the next folder, answered before the SELECT goes.
    const next = relay.transcript.length;
    expect(statusOf(await raw.command("b", "SELECT Box"), "b")).toStartWith("b OK");
    expect(relay.commandsSince(next)).toEqual(["UNSELECT", "|", "EXAMINE Box", "UID SEARCH ALL", ...BOX_SEARCHES]);
  } finally {
    raw.close();
    relay.clear();
  }
});

/** Where a server may put Box's responses after the point the proxy takes as the boundary, on each kind of server. */
const PAST_BOUNDARY = [
  {
    name: "no [CLOSED] owed, Box's responses after UNSELECT's OK",
    caps: withoutQresync,
    boundary: /^\S+ OK Unselect/,
    sent: PIPELINED,
    late: BOX_LEFTOVERS,
    twice: "FLAGS",
  },
  {
    name: "Dovecot as it is, Box's responses after its [CLOSED]",
    caps: (line: string) => line,
    boundary: /^\* OK \[CLOSED\]/,
    sent: ["EXAMINE Open", "UID SEARCH ALL"],
    late: BOX_LEFTOVERS,
    twice: "FLAGS",
  },
  {
    name: "no [CLOSED] owed, Box's first unseen alone after UNSELECT's OK",
    caps: withoutQresync,
    boundary: /^\S+ OK Unselect/,
    sent: PIPELINED,
    late: "* OK [UNSEEN 2] First unseen\r\n",
    twice: "[UNSEEN]",
  },
  {
    name: "Dovecot as it is, a second [CLOSED] after its own",
    caps: (line: string) => line,
    boundary: /^\* OK \[CLOSED\]/,
    sent: ["EXAMINE Open", "UID SEARCH ALL"],
    late: `${BOX_LEFTOVERS}* OK [CLOSED] Previous mailbox closed.\r\n`,
    twice: "[CLOSED]",
  },
  {
    name: "no [CLOSED] owed, CONDSTORE on, a [NOMODSEQ] beside Open's HIGHESTMODSEQ",
    caps: withoutQresync,
    boundary: /^\S+ OK Unselect/,
    sent: PIPELINED.map((c) => (c === "EXAMINE Open" ? "EXAMINE Open (CONDSTORE)" : c)),
    late: "* OK [NOMODSEQ] No permanent modsequences\r\n",
    twice: "[HIGHESTMODSEQ] or [NOMODSEQ]",
    condstore: true,
  },
];

for (const { name, caps, boundary, sent, late, twice, condstore } of PAST_BOUNDARY) {
  test(`${name}: ${twice} said twice, the SELECT refused, UNSELECT answered first from then on`, async () => {
    const plain = await plainOpen(condstore);
    // Open's own answer says each once, UNSEEN too (its message is unseen).
    expect(plain).toContain("* OK [UNSEEN 1]");
    const noClosed = caps === withoutQresync ? relay.rewriteEvery(/^\* OK \[CLOSED\]/, () => "") : () => {};
    const raw = await login(caps);
    try {
      if (condstore) expect(statusOf(await raw.command("e", "ENABLE CONDSTORE"), "e")).toStartWith("e OK");
      expect(statusOf(await raw.command("b", "SELECT Box"), "b")).toStartWith("b OK");
      await rows();
      const mark = relay.transcript.length;
      const added = relay.rewrite(boundary, (line) => `${line}${late}`);
      const reply = await raw.command("o", "SELECT Open");
      await added;
      expect(reply).toBe("o NO [UNAVAILABLE] The mailbox could not be opened; try again later\r\n");
      expect(relay.commandsSince(mark)).toEqual([...sent, "|", "UNSELECT"]);
      const own = (await rows()).filter((r) => r.command === "SELECT");
      expect(own.map((r) => [r.folder, r.decision, r.rule])).toEqual([["Open", "error", "open"]]);
      expect(own[0]!.reason).toBe(
        `upstream's answer said ${twice} twice: another folder's responses could not be told from this folder's`,
      );
      // Nothing is selected; Open again, as it is.
      expect(statusOf(await raw.command("f", "FETCH 1 (FLAGS)"), "f")).toStartWith("f BAD");
      expect(await raw.command("o", "SELECT Open")).toBe(plain);
      // This server's boundary is not counted on any more: UNSELECT, answered, before the next folder.
      const next = relay.transcript.length;
      expect(statusOf(await raw.command("b", "SELECT Box"), "b")).toStartWith("b OK");
      const box = condstore ? "EXAMINE Box (CONDSTORE)" : "EXAMINE Box";
      expect(relay.commandsSince(next)).toEqual(["UNSELECT", "|", box, "UID SEARCH ALL", ...BOX_SEARCHES]);
    } finally {
      raw.close();
      noClosed();
      relay.clear();
    }
  });
}
