/**
 * mutt (Debian's, installed for the tests by scripts/test.ts) sending in batch mode through the SMTP proxy in front
 * of the real Postfix, as an agent's shell would: `mutt -n -F muttrc -s subject -- recipients < body`, with
 * `smtp_url` and `smtp_pass` pointing at the proxy. An allowed send is delivered by Postfix; a send to a recipient
 * the rules refuse, alone or beside an allowed one, makes mutt fail, delivers nothing and has its deny row.
 */
import { expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connectImap, createMailbox, type TestMailbox } from "../fixtures/index.ts";
import { expected, rawMessage, SEED_RULES } from "../imap/filtered-fixture.ts";
import { startTestProxy as startImapProxy } from "../imap/helpers.ts";
import {
  bodyOf,
  CORP_ONLY_RULES,
  marker,
  nothingReachedUpstream,
  sinkCopies,
  type TestProxy,
  upstreams,
  useTestProxy,
  waitForSink,
} from "../smtp/helpers.ts";

setDefaultTimeout(60_000);

const MUTT = "/usr/bin/mutt";

let p: TestProxy;
useTestProxy({ rules: CORP_ONLY_RULES }, (proxy) => (p = proxy));

interface Run {
  readonly exitCode: number;
  readonly output: string;
}

/**
 * Sends `body` with mutt in batch mode through the proxy, as the first test user (pass-through), to `recipients`;
 * a muttrc of its own (`-n`: no system muttrc), no copy kept, in a folder of its own as HOME.
 */
async function muttSend(subject: string, recipients: readonly string[], body: string): Promise<Run> {
  if (!(await Bun.file(MUTT).exists()))
    throw new Error("mutt is missing: npm test installs it; or sudo apt-get install -y --no-install-recommends mutt");
  const user = upstreams().users[0]!;
  const home = mkdtempSync(join(tmpdir(), "mg-mutt-"));
  try {
    const rc = join(home, "muttrc");
    writeFileSync(
      rc,
      `set smtp_url = "smtp://${encodeURIComponent(user.user)}@127.0.0.1:${p.port}/"
set smtp_pass = "${user.password}"
set ssl_force_tls = no
set ssl_starttls = no
set from = "${user.address}"
set realname = "Mutt Agent"
set use_from = yes
set hostname = "mailgator.test"
set copy = no
set record = ""
set charset = "utf-8"
set send_charset = "utf-8"
`,
      { mode: 0o600 },
    );
    const child = Bun.spawn([MUTT, "-n", "-F", rc, "-s", subject, "--", ...recipients], {
      stdin: new TextEncoder().encode(body),
      stdout: "pipe",
      stderr: "pipe",
      env: { ...process.env, HOME: home, TERM: "dumb", LANG: "C.UTF-8" },
    });
    const [stdout, stderr, exitCode] = await Promise.all([
      new Response(child.stdout).text(),
      new Response(child.stderr).text(),
      child.exited,
    ]);
    return { exitCode, output: `${stdout}${stderr}` };
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
}

/** Quotes `text` for sh. */
function shellQuoted(text: string): string {
  return `'${text.replace(/'/g, "'\\''")}'`;
}

/**
 * Runs mutt's IMAP side on the proxy's INBOX (plain on loopback, as the IMAP tests' listener is) with `keys` as a
 * macro it runs at once; `keys` must end in <quit>. mutt's index wants a terminal: util-linux's `script` gives it one.
 * A prompt the keys do not answer would wait forever, so mutt is ended after 20 s and the test fails with its screen.
 */
async function muttRead(home: string, port: number, account: TestMailbox, keys: string): Promise<Run> {
  const rc = join(home, "muttrc");
  writeFileSync(
    rc,
    `set imap_user = "${account.user}"
set imap_pass = "${account.password}"
set ssl_force_tls = no
set ssl_starttls = no
set folder = "${home}"
set spoolfile = ""
set record = ""
set confirmcreate = no
set confirmappend = no
set quit = yes
set move = no
set mbox_type = mbox
set header_cache = ""
set message_cachedir = ""
set sort = mailbox-order
set wait_key = no
macro index Z "${keys}"
`,
    { mode: 0o600 },
  );
  const mutt = [MUTT, "-n", "-F", rc, "-f", `imap://127.0.0.1:${port}/INBOX`, "-e", "push Z"];
  const child = Bun.spawn(["script", "-qec", mutt.map(shellQuoted).join(" "), "/dev/null"], {
    stdin: "pipe",
    stdout: "pipe",
    stderr: "pipe",
    env: { ...process.env, HOME: home, TERM: "xterm", LANG: "C.UTF-8" },
  });
  const timer = setTimeout(() => child.kill(), 20_000);
  const [stdout, stderr, exitCode] = await Promise.all([
    new Response(child.stdout).text(),
    new Response(child.stderr).text(),
    child.exited,
  ]);
  clearTimeout(timer);
  // The screen without its terminal controls, for a failure's message.
  const output = `${stdout}${stderr}`.replace(/\x1b\[[0-9;?]*[a-zA-Z]|\x1b[()][0-9A-Z]/g, " ").replace(/\s+/g, " ");
  if (child.signalCode !== null) throw new Error(`mutt did not finish in 20 s; its screen: ${output}`);
  return { exitCode, output };
}

/** The Message-IDs of an mbox file's messages, sorted. */
function messageIds(mbox: string): string[] {
  return [...mbox.matchAll(/^Message-ID:\s*(\S+)/gim)].map((m) => m[1]!).sort();
}

/** This send's rows: those of the sessions that had a row naming the marker. */
async function rowsOf(m: string) {
  const rows = await p.rows();
  const sessions = new Set(rows.filter((r) => r.target?.includes(m)).map((r) => r.session));
  return rows.filter((r) => sessions.has(r.session) && r.command !== "AUTH");
}

test("an allowed send: mutt succeeds and Postfix delivers the message, with its rows", async () => {
  const m = marker();
  const run = await muttSend(`mutt ${m}`, [`a-${m}@corp.test`], `hello from mutt ${m}\n`);
  expect(run.output).toBe("");
  expect(run.exitCode).toBe(0);
  const [copy] = await waitForSink(m, 1);
  expect(copy!.recipient).toBe(`a-${m}@corp.test`);
  expect(copy!.text).toContain(`Subject: mutt ${m}`);
  expect(copy!.text).toContain(`From: Mutt Agent <${upstreams().users[0]!.address}>`);
  expect(copy!.text).toContain(`Return-Path: <${upstreams().users[0]!.address}>`);
  expect(bodyOf(copy!.text)).toContain(`hello from mutt ${m}`);
  expect(sinkCopies(m)).toHaveLength(1);
  const rows = await rowsOf(m);
  expect(rows.filter((r) => r.decision !== "allow")).toEqual([]);
  expect(rows.map((r) => [r.command, r.target === `a-${m}@corp.test` ? "rcpt" : "", r.rule])).toContainEqual([
    "RCPT TO",
    "rcpt",
    "corp only",
  ]);
  expect(rows.some((r) => r.command === "DATA" && r.detail?.["upstreamCode"] === 250)).toBe(true);
});

test("a refused recipient: mutt fails, nothing is delivered, with the deny row", async () => {
  const m = marker();
  const run = await muttSend(`mutt refused ${m}`, [`x-${m}@elsewhere.test`], `not for outside ${m}\n`);
  expect(run.output).toContain(`550 5.7.1 Recipient <x-${m}@elsewhere.test> is not allowed`);
  expect(run.exitCode).not.toBe(0);
  await nothingReachedUpstream(p.port, m);
  const rows = await rowsOf(m);
  expect(rows.map((r) => [r.command, r.target, r.decision, r.rule])).toEqual([
    ["RCPT TO", `x-${m}@elsewhere.test`, "deny", "nothing else"],
  ]);
});

test("an allowed and a refused recipient in one send: mutt fails and neither receives it", async () => {
  const m = marker();
  const run = await muttSend(`mutt mixed ${m}`, [`a-${m}@corp.test`, `x-${m}@elsewhere.test`], `mixed ${m}\n`);
  expect(run.output).toContain(`550 5.7.1 Recipient <x-${m}@elsewhere.test> is not allowed`);
  expect(run.exitCode).not.toBe(0);
  await nothingReachedUpstream(p.port, m);
  const rows = await rowsOf(m);
  expect(rows.filter((r) => r.command === "DATA")).toEqual([]);
  expect(rows.filter((r) => r.decision === "deny").map((r) => [r.command, r.target, r.rule])).toEqual([
    ["RCPT TO", `x-${m}@elsewhere.test`, "nothing else"],
  ]);
});

test("a filtered INBOX: mutt copies out just the visible messages; its server search finds no hidden one", async () => {
  const mailbox = await createMailbox({ seed: { folders: { INBOX: 30 }, seed: 13 } });
  const e = expected(mailbox.manifest.folders["INBOX"]!);
  expect(e.visible.length).toBeGreaterThan(2);
  expect(e.hidden.length).toBeGreaterThan(2);
  // Two arrivals whose bodies carry the same word, one visible and one hidden under the seed rule.
  const word = `probe${mailbox.token}`;
  const visible = `<mutt-visible-${mailbox.token}@filtered.test>`;
  const hidden = `<mutt-hidden-${mailbox.token}@filtered.test>`;
  const direct = await connectImap(mailbox);
  await direct.append("INBOX", rawMessage("notifications@shop.test", `Shown ${word}`, `mutt-visible-${mailbox.token}`));
  await direct.append("INBOX", rawMessage("stranger@elsewhere.test", `Hidden ${word}`, `mutt-hidden-${mailbox.token}`));
  await direct.logout();
  const imap = await startImapProxy({ rules: SEED_RULES });
  const home = mkdtempSync(join(tmpdir(), "mg-mutt-"));
  try {
    const all = join(home, "all.mbox");
    const found = join(home, "found.mbox");
    // `=b` is mutt's server-side body search (an IMAP SEARCH BODY); <tag-prefix-cond> copies only when it tagged.
    const keys =
      `<tag-pattern>~A<enter><tag-prefix><copy-message>${all}<enter><untag-pattern>~A<enter>` +
      `<tag-pattern>=b ${word}<enter><tag-prefix-cond><copy-message>${found}<enter><end-cond><quit>`;
    const run = await muttRead(home, imap.port, mailbox, keys);
    expect(run.exitCode).toBe(0);
    const copied = messageIds(readFileSync(all, "latin1"));
    expect(copied).toEqual([...e.visible.map((m) => m.messageId), visible].sort());
    const searched = readFileSync(found, "latin1");
    expect(messageIds(searched)).toEqual([visible]);
    for (const text of [readFileSync(all, "latin1"), searched]) {
      expect(text).not.toContain(hidden);
      expect(text).not.toContain(`Hidden ${word}`);
      for (const m of e.hidden) expect(text).not.toContain(m.messageId);
    }
    // Only reads: nothing refused, nothing written.
    const rows = (await imap.rows()).filter((r) => r.agent === mailbox.user);
    expect(rows.filter((r) => r.decision !== "allow")).toEqual([]);
    expect(rows.some((r) => r.command === "UID SEARCH" && r.folder === "INBOX")).toBe(true);
    expect(rows.filter((r) => r.operation === "mail:flag" || r.operation === "mail:delete")).toEqual([]);
  } finally {
    await imap.close();
    rmSync(home, { recursive: true, force: true });
  }
});
