/**
 * A change upstream while a SELECT lists the folder's UIDs (src/imap/commands/select.ts, docs/imap.md "Round trips
 * upstream"): the proxy sends `UID SEARCH ALL` right behind the SELECT; Dovecot answers it from the session's view,
 * then reports another session's EXPUNGE before its OK. A relay between the proxy and Dovecot holds that search
 * until a client connected straight to Dovecot has expunged the first visible message of a filtered INBOX, so the
 * race happens every time. Before, the proxy kept the stale list and dropped the EXPUNGE: from then on each upstream
 * sequence number named the message before it, and a hidden message's new keyword reached the agent as a flag
 * change of its visible neighbour. Now the changed search is run again, and the agent's view is the folder as it is.
 * An arrival reported the same way needs no second search: it only adds messages after those listed.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import type { Socket } from "node:net";
import type { ImapFlow } from "imapflow";
import { SELECT_SEARCHES } from "../../src/imap/limits.ts";
import { connectImap, createMailbox, type TestMailbox, upstreams } from "../fixtures/index.ts";
import { TcpRelay } from "../fixtures/tcp-relay.ts";
import { type Expected, expected, expectNoLeak, fetchedUids, rawMessage, SEED_RULES } from "./filtered-fixture.ts";
import { RawImap, startTestProxy, statusOf, type TestProxy } from "./helpers.ts";

/**
 * A relay to Dovecot's plain IMAP port that, once `hold()` is called, lets the proxy's commands through up to the
 * first `UID SEARCH ALL` that follows a SELECT or EXAMINE (`hold(true)`: the next one, a repeated search), and keeps
 * that line and what follows until `release()`. `held` resolves once that search is kept and Dovecot has answered
 * the SELECT or EXAMINE before it: a change made after that is one the folder did not have when it was opened.
 */
class HoldingRelay {
  readonly #relay: TcpRelay;
  #gate: {
    held: () => void;
    text: string;
    selected: boolean;
    kept: string;
    /** The SELECT or EXAMINE's tag until Dovecot has answered it, then null. */
    opening: string | null;
  } | null = null;
  #toUpstream: Socket | null = null;

  private constructor(relay: TcpRelay) {
    this.#relay = relay;
  }

  static async start(upstreamPort: number): Promise<HoldingRelay> {
    let holding: HoldingRelay | null = null;
    const relay = await TcpRelay.start({ host: "127.0.0.1", port: upstreamPort }, () => ({
      fromClient: (chunk, link) => {
        holding!.#toUpstream = link.target;
        holding!.#fromProxy(chunk.toString("latin1"));
      },
      fromTarget: (chunk, link) => {
        link.client.write(chunk);
        holding!.#fromDovecot(chunk.toString("latin1"));
      },
    }));
    holding = new HoldingRelay(relay);
    return holding;
  }

  get port(): number {
    return this.#relay.port;
  }

  /** Resolves `held` once the search is kept back; `release()` sends it and everything after it. */
  hold(again = false): { held: Promise<void>; release: () => void } {
    let held!: () => void;
    const promise = new Promise<void>((resolve) => (held = resolve));
    const gate = { held, text: "", selected: again, kept: "", opening: null };
    this.#gate = gate;
    return {
      held: promise,
      release: () => {
        if (this.#gate === gate) this.#gate = null;
        this.#toUpstream!.write(Buffer.from(gate.kept + gate.text, "latin1"));
      },
    };
  }

  /** `UID SEARCH ALL` commands the proxy sent through this relay. */
  searches = 0;

  #fromProxy(text: string): void {
    this.searches += text.match(/^\S+ UID SEARCH ALL\r$/gm)?.length ?? 0;
    const gate = this.#gate;
    if (gate === null) {
      this.#toUpstream!.write(Buffer.from(text, "latin1"));
      return;
    }
    gate.text += text;
    for (let end = gate.text.indexOf("\r\n"); end !== -1; end = gate.text.indexOf("\r\n")) {
      const line = gate.text.slice(0, end + 2);
      gate.text = gate.text.slice(end + 2);
      if (gate.kept !== "") gate.kept += line;
      else if (gate.selected && /^\S+ UID SEARCH ALL\r\n$/.test(line)) {
        gate.kept = line;
        if (gate.opening === null) gate.held();
      } else {
        const opening = /^(\S+) (SELECT|EXAMINE) /.exec(line);
        if (opening !== null) {
          gate.selected = true;
          gate.opening = opening[1]!;
        }
        this.#toUpstream!.write(Buffer.from(line, "latin1"));
      }
    }
  }

  /** The end of Dovecot's last chunk after its last line break: a line may come in two chunks. */
  #partial = "";

  #fromDovecot(chunk: string): void {
    const text = this.#partial + chunk;
    this.#partial = text.slice(text.lastIndexOf("\n") + 1);
    const gate = this.#gate;
    if (gate?.opening == null || !new RegExp(`^${gate.opening} `, "m").test(text)) return;
    gate.opening = null;
    if (gate.kept !== "") gate.held();
  }

  close(): Promise<void> {
    return this.#relay.close();
  }
}

let mailbox: TestMailbox;
let e: Expected;
let relay: HoldingRelay;
let proxy: TestProxy;
let human: ImapFlow;

beforeAll(async () => {
  mailbox = await createMailbox({ seed: { folders: { INBOX: 40 }, seed: 31 } });
  e = expected(mailbox.manifest.folders["INBOX"]!);
  relay = await HoldingRelay.start(upstreams().ports.imap);
  proxy = await startTestProxy({ rules: SEED_RULES, upstreamTls: "none", upstreamAddr: `127.0.0.1:${relay.port}` });
  human = await connectImap(mailbox);
  await human.mailboxOpen("INBOX");
});

afterAll(async () => {
  await human?.logout();
  await proxy?.close();
  await relay?.close();
});

test("an EXPUNGE during SELECT's UID SEARCH: the view is the folder as it is; hidden flags stay hidden", async () => {
  const all = [...e.visible, ...e.hidden].sort((a, b) => a.uid - b.uid);
  const expunged = e.visibleUids[0]!;
  // Once the first visible message is gone, each upstream number names the next message: a hidden message right
  // after a visible one is what a stale list would show under its neighbour's number.
  expect(all.some((m, i) => i > 0 && e.hiddenUids.has(m.uid) && !e.hiddenUids.has(all[i - 1]!.uid))).toBe(true);

  const agent = await RawImap.login(proxy.port, mailbox);
  const gate = relay.hold();
  agent.write("s EXAMINE INBOX\r\n");
  await gate.held;
  await human.messageDelete(String(expunged), { uid: true });
  gate.release();
  const selected = await agent.waitTagged("s");
  expect(statusOf(selected, "s")).toStartWith("s OK");
  const remaining = e.visibleUids.slice(1);
  expect(selected).toContain(`* ${remaining.length} EXISTS`);

  // The owner tags every hidden message; the agent's NOOP brings upstream's flag changes (without UIDs).
  await human.messageFlagsAdd([...e.hiddenUids].join(","), ["$Leaked"], { uid: true });
  const noop = await agent.command("n", "NOOP");
  expect(noop).not.toContain("$Leaked");
  const view = await agent.command("f", "FETCH 1:* (UID FLAGS)");
  expect(fetchedUids(view)).toEqual(remaining.map((uid, i) => [i + 1, uid] as [number, number]));
  expect(view).not.toContain("$Leaked");
  expectNoLeak(selected + noop + view, e);
  agent.close();
  e = { ...e, visible: e.visible.slice(1), visibleUids: remaining };
});

/** EXAMINE INBOX with a hidden message expunged during each of its first `changes` UID SEARCHes; the reply. */
async function examineWithChanges(agent: RawImap, changes: number): Promise<string> {
  let gate = relay.hold();
  agent.write("s EXAMINE INBOX\r\n");
  for (let i = 0; i < changes; i++) {
    await gate.held;
    const victim = e.hidden[0]!;
    await human.messageDelete(String(victim.uid), { uid: true });
    e = { ...e, hidden: e.hidden.slice(1), hiddenUids: new Set(e.hidden.slice(1).map((m) => m.uid)) };
    const current = gate;
    if (i + 1 < changes) gate = relay.hold(true);
    current.release();
  }
  return agent.waitTagged("s");
}

test(`a folder that changes during each of SELECT_SEARCHES (${SELECT_SEARCHES}) searches is not opened`, async () => {
  const agent = await RawImap.login(proxy.port, mailbox);
  // One search fewer than the limit changed: the last one lists the folder, and the SELECT succeeds.
  const opened = await examineWithChanges(agent, SELECT_SEARCHES - 1);
  expect(statusOf(opened, "s")).toStartWith("s OK");
  expect(opened).toContain(`* ${e.visibleUids.length} EXISTS`);
  // Each of them changed: NO [UNAVAILABLE], an error row, and the session is not in a folder any more.
  const refused = await examineWithChanges(agent, SELECT_SEARCHES);
  expect(statusOf(refused, "s")).toBe("s NO [UNAVAILABLE] The mailbox could not be opened; try again later");
  expect(refused).not.toContain("EXISTS");
  expect(statusOf(await agent.command("f", "FETCH 1 (UID)"), "f")).toStartWith("f BAD");
  const rows = await proxy.rows();
  expect(rows.findLast((r) => r.command === "EXAMINE")).toMatchObject({
    decision: "error",
    reason: "the folder's UIDs could not be listed: it changed during each search",
  });
  const view = await agent.command("t", "EXAMINE INBOX");
  expect(statusOf(view, "t")).toStartWith("t OK");
  expect(view).toContain(`* ${e.visibleUids.length} EXISTS`);
  agent.close();
});

test("an arrival reported during SELECT's UID SEARCH needs no second search: the view has it at once", async () => {
  const agent = await RawImap.login(proxy.port, mailbox);
  const gate = relay.hold();
  const before = relay.searches;
  agent.write("s EXAMINE INBOX\r\n");
  await gate.held;
  const arrived = await human.append(
    "INBOX",
    rawMessage("notifications@shop.test", "Arrived during select", `arrival-${Date.now()}`),
  );
  const uid = (arrived as { uid: number }).uid;
  gate.release();
  const selected = await agent.waitTagged("s");
  expect(statusOf(selected, "s")).toStartWith("s OK");
  // One search, the pipelined one: the arrival (an EXISTS after the SEARCH) is learnt like any other.
  expect(relay.searches - before).toBe(1);
  const view = await agent.command("f", "UID FETCH 1:* (UID)");
  expect(fetchedUids(view).map(([, u]) => u)).toEqual([...e.visibleUids, uid]);
  agent.close();
  e = { ...e, visibleUids: [...e.visibleUids, uid] };
});
