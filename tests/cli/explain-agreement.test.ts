/**
 * `mailgator explain` answers as the proxies decide (docs/config.md "Trying rules: mailgator explain"): a table of
 * requests goes through the real SMTP proxy in front of Postfix and the real IMAP proxy in front of Dovecot, and
 * through `explain --json` in its own process, with the same rules; the answers must be equal. Sends are tried in
 * every order of their recipients: per RCPT (accepted, refused, never reached), for the whole message (sent or
 * refused), and the rule the proxy's audit row names for each recipient. Reads: whether LIST shows the folder and
 * SELECT opens it, whether a message with given From/To/Cc/Subject/attachment exists for the agent, and whether
 * STORE \Deleted is allowed.
 */

import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { ImapFlow } from "imapflow";
import { connectImap, createMailbox, type TestMailbox, upstreams } from "../fixtures/index.ts";
import {
  RawImap,
  startTestProxy as startImapProxy,
  statusOf,
  type TestProxy as TestImapProxy,
} from "../imap/helpers.ts";
import {
  dataPayload,
  loggedIn,
  marker,
  type RawClient,
  startTestProxy as startSmtpProxy,
  type TestProxy as TestSmtpProxy,
  vaultClient,
  vaultConfig,
} from "../smtp/helpers.ts";

setDefaultTimeout(120_000);

const ROOT = join(import.meta.dir, "../..");
const MAIN = join(ROOT, "src/cli/main.ts");

/** Send rules, read rules, then deny: one config for both proxies and for explain. */
const RULES = `
[[rules]]
name = "blocked sender"
action = "deny"
operations = ["send"]
from = "blocked@corp.test"

[[rules]]
name = "no blind copies to partners"
action = "deny"
operations = ["send"]
bcc = "*@partner.test"

[[rules]]
name = "no invoices out"
action = "deny"
operations = ["send"]
subject = "*invoice*"

[[rules]]
name = "no secrets out"
action = "deny"
operations = ["send"]
subject = "secret *"

[[rules]]
name = "no attachments to partners"
action = "deny"
operations = ["send"]
to = "*@partner.test"
has_attachment = true

[[rules]]
name = "colleagues and partners"
action = "allow"
operations = ["send"]
to = ["*@corp.test", "*@partner.test"]

[[rules]]
name = "no secrets"
action = "deny"
operations = ["read"]
folders = ["INBOX"]
subject = "*secret*"

[[rules]]
name = "notifications"
action = "allow"
operations = ["read"]
folders = ["INBOX"]
from = "notifications@*"

[[rules]]
name = "invoices with attachments"
action = "allow"
operations = ["read"]
folders = ["INBOX"]
from = "billing@*"
has_attachment = true

[[rules]]
name = "archive"
action = "allow"
operations = ["read"]
folders = ["Archive"]

[[rules]]
name = "trash"
action = "allow"
operations = ["read", "mail:delete"]
folders = ["Trash"]

[[rules]]
name = "agent folders"
action = "allow"
folders = ["Agent", "Agent/**"]

[[rules]]
name = "projects"
action = "allow"
operations = ["folder:write"]
folders = ["Projects"]

[[rules]]
name = "deny everything else"
action = "deny"
`;

const IDENTITIES = `identities = ["alias@corp.test", "blocked@corp.test"]`;

let dir: string;
let configFile: string;
let smtp: TestSmtpProxy;
let imap: TestImapProxy;
let mailbox: TestMailbox;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "mg-explain-"));
  configFile = join(dir, "mailgator.toml");
  writeFileSync(
    configFile,
    `[imap]\nlisten_addr = "127.0.0.1:1993"\nupstream_addr = "127.0.0.1:993"\n\n` +
      `[smtp]\nlisten_addr = "127.0.0.1:1587"\nupstream_addr = "127.0.0.1:587"\n${IDENTITIES}\n${RULES}`,
  );
  smtp = await startSmtpProxy({ rules: RULES, smtp: IDENTITIES });
  imap = await startImapProxy({ rules: RULES });
  mailbox = await createMailbox({ name: "explain-agreement" });
});

afterAll(async () => {
  await smtp?.close();
  await imap?.close();
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
});

/** The parts of `explain --json` these tests compare. */
interface ExplainAnswer {
  readonly action: string;
  readonly rule: string | null;
  readonly visible?: boolean;
  readonly subtree?: {
    readonly visible: boolean;
    readonly mailDelete: { readonly action: string };
    readonly filtered: boolean;
  } | null;
  readonly sender?: { readonly refused: boolean };
  readonly recipients?: readonly {
    readonly address: string;
    readonly rcpt: "accepted" | "refused" | "not-reached";
    readonly rule: string | null;
  }[];
}

/** `mailgator explain -c FILE --json ...args` in its own process; one object per line. */
function explainJson(args: string[]): ExplainAnswer[] {
  const p = Bun.spawnSync([process.execPath, MAIN, "explain", "-c", configFile, "--json", ...args], {
    cwd: ROOT,
    env: { PATH: process.env["PATH"] ?? "" },
  });
  if (p.exitCode !== 0) throw new Error(`explain ${args.join(" ")}: exit ${p.exitCode}: ${p.stderr.toString()}`);
  return p.stdout
    .toString()
    .trim()
    .split("\n")
    .map((line) => JSON.parse(line));
}

function permutations<T>(items: readonly T[]): T[][] {
  if (items.length <= 1) return [[...items]];
  const out: T[][] = [];
  items.forEach((item, i) => {
    for (const rest of permutations([...items.slice(0, i), ...items.slice(i + 1)])) out.push([item, ...rest]);
  });
  return out;
}

/** A multipart/mixed message whose second part is a PDF attachment. */
function withAttachment(headers: readonly string[]): string {
  return [
    ...headers,
    'Content-Type: multipart/mixed; boundary="b1"',
    "",
    "--b1",
    "Content-Type: text/plain",
    "",
    "see attached",
    "--b1",
    "Content-Type: application/pdf",
    'Content-Disposition: attachment; filename="a.pdf"',
    "Content-Transfer-Encoding: base64",
    "",
    "JVBERi0xLjQK",
    "--b1--",
    "",
  ].join("\r\n");
}

// ---- sends ---------------------------------------------------------------------------------------------------

interface SendCase {
  readonly name: string;
  /** Envelope sender; "login" for the test user's own address, "" for <>. */
  readonly from: string;
  readonly to: readonly string[];
  readonly cc?: readonly string[];
  readonly bcc?: readonly string[];
  readonly subject?: string;
  readonly attachment?: boolean;
  /** What the proxy must do with the message (so the table cannot pass by both sides being wrong alike). */
  readonly expect: "sent" | "refused";
}

const SENDS: readonly SendCase[] = [
  {
    name: "one denied recipient among allowed ones",
    from: "login",
    to: ["x@evil.test", "ok@corp.test"],
    expect: "refused",
  },
  { name: "two colleagues", from: "login", to: ["a@corp.test", "b@corp.test"], expect: "sent" },
  { name: "a partner as blind copy", from: "login", to: ["a@corp.test"], bcc: ["p@partner.test"], expect: "refused" },
  { name: "a partner in Cc", from: "login", to: ["a@corp.test"], cc: ["p@partner.test"], expect: "sent" },
  {
    name: "an attachment to a partner",
    from: "login",
    to: ["a@corp.test", "p@partner.test"],
    attachment: true,
    expect: "refused",
  },
  {
    name: "an attachment to colleagues",
    from: "login",
    to: ["a@corp.test"],
    cc: ["b@corp.test"],
    attachment: true,
    expect: "sent",
  },
  { name: "a denied subject", from: "login", to: ["a@corp.test"], subject: "invoice 12", expect: "refused" },
  // The proxy matches a Subject without the white space at its ends; explain read `--subject` with it, and allowed.
  { name: "a denied subject after spaces", from: "login", to: ["a@corp.test"], subject: "  secret", expect: "refused" },
  { name: "a sender denied by a rule", from: "blocked@corp.test", to: ["a@corp.test"], expect: "refused" },
  {
    name: "an identity, three classes",
    from: "alias@corp.test",
    to: ["a@corp.test"],
    cc: ["b@corp.test"],
    bcc: ["c@corp.test"],
    expect: "sent",
  },
  { name: "the null sender", from: "", to: ["a@corp.test"], expect: "sent" },
  {
    name: "two denied and one allowed",
    from: "login",
    to: ["x@evil.test", "ok@corp.test", "y@evil.test"],
    expect: "refused",
  },
];

interface SendResult {
  readonly mail: "accepted" | "refused";
  readonly rcpt: Record<string, "accepted" | "refused" | "not-reached">;
  readonly message: "sent" | "refused";
  /** The rule named for each recipient (audit rows of the proxy; explain's per-recipient rule), where it has one. */
  readonly rules: Record<string, string | null>;
}

function sendText(c: SendCase, envelopeTo: readonly string[], envelopeCc: readonly string[], token: string): string {
  const headers = [
    `From: <${c.from === "login" || c.from === "" ? upstreams().users[0]!.address : c.from}>`,
    `To: ${envelopeTo.join(", ")}`,
    ...(envelopeCc.length > 0 ? [`Cc: ${envelopeCc.join(", ")}`] : []),
    `Subject: ${c.subject ?? "hello"} ${token}`,
    `Message-ID: <${token}@explain.test>`,
    "MIME-Version: 1.0",
  ];
  if (!c.attachment) return `${headers.join("\r\n")}\r\nContent-Type: text/plain\r\n\r\nhi ${token}\r\n`;
  return withAttachment(headers);
}

/** One transaction through the SMTP proxy with RCPTs in `order`. */
async function proxySend(c: SendCase, order: readonly string[], token: string): Promise<SendResult> {
  const sender = c.from === "login" ? upstreams().users[0]!.address : c.from;
  const before = (await smtp.rows()).length;
  const client: RawClient = await loggedIn(smtp.port);
  const rcpt: Record<string, "accepted" | "refused" | "not-reached"> = {};
  let message: "sent" | "refused" = "refused";
  let mail: "accepted" | "refused";
  try {
    const m = await client.command(`MAIL FROM:<${sender}>`);
    expect([250, 553]).toContain(m.code);
    mail = m.code === 250 ? "accepted" : "refused";
    for (const r of order) {
      const reply = await client.command(`RCPT TO:<${r}>`);
      rcpt[r] = reply.code === 250 ? "accepted" : reply.code === 550 ? "refused" : "not-reached";
      if (reply.code === 503) expect(mail).toBe("refused");
    }
    const data = await client.command("DATA");
    if (data.code === 354) {
      const to = order.filter((r) => c.to.includes(r));
      const cc = order.filter((r) => c.cc?.includes(r));
      client.write(dataPayload(sendText(c, to, cc, token)));
      const final = await client.reply(20_000);
      expect([250, 554]).toContain(final.code);
      message = final.code === 250 ? "sent" : "refused";
    }
    await client.command("QUIT");
  } finally {
    client.close();
  }
  const rules: Record<string, string | null> = {};
  for (const row of (await smtp.rows()).slice(before)) {
    if (row.command === "RCPT TO" && row.target !== null) rules[row.target] = row.rule;
  }
  return { mail, rcpt, message, rules };
}

/** The same transaction through `explain --json`: --to/--cc/--bcc in the order the envelope has them. */
function explainSend(c: SendCase, order: readonly string[], token: string): SendResult {
  const args = ["--op", "mail:send", "--subject", `${c.subject ?? "hello"} ${token}`];
  const sender = c.from === "login" ? upstreams().users[0]!.address : c.from === "" ? "<>" : c.from;
  args.push("--from", sender);
  for (const r of order) {
    const flag = c.to.includes(r) ? "--to" : c.cc?.includes(r) ? "--cc" : "--bcc";
    args.push(flag, r);
  }
  args.push(c.attachment ? "--attachment" : "--no-attachment");
  const [answer] = explainJson(args);
  const rcpt: SendResult["rcpt"] = {};
  const rules: Record<string, string | null> = {};
  for (const r of answer!.recipients!) {
    rcpt[r.address] = r.rcpt;
    rules[r.address] = r.rule;
  }
  expect(["allow", "deny"]).toContain(answer!.action);
  return {
    mail: answer!.sender!.refused ? "refused" : "accepted",
    rcpt,
    message: answer!.action === "allow" ? "sent" : "refused",
    rules,
  };
}

describe("sends: the SMTP proxy and explain agree, in every order of the recipients", () => {
  for (const c of SENDS) {
    test(c.name, async () => {
      const all = [...c.to, ...(c.cc ?? []), ...(c.bcc ?? [])];
      for (const order of permutations(all)) {
        const token = `ex${marker()}`;
        const proxy = await proxySend(c, order, token);
        const simulated = explainSend(c, order, token);
        // The proxy's audit names a rule for the recipients it decided (all of them, unless it stopped at RCPT).
        const named: Record<string, string | null> = {};
        for (const r of Object.keys(proxy.rules)) named[r] = simulated.rules[r] ?? null;
        expect({ order, ...simulated, rules: named }).toEqual({ order, ...proxy });
        expect(proxy.message).toBe(c.expect);
      }
    });
  }
});

// ---- vault mode: an agent's rules and its account's identities -------------------------------------------------

describe("vault mode: the SMTP proxy and explain --agent agree", () => {
  const VAULT_RULES = `
[[rules]]
name = "bot writes to colleagues"
action = "allow"
operations = ["send"]
agents = ["bot"]
to = "*@corp.test"

[[rules]]
name = "deny everything else"
action = "deny"
`;
  const token = "mgt_explain-agreement-vault-token-0000000000000";
  let vault: TestSmtpProxy;
  let vaultFile: string;

  beforeAll(async () => {
    const toml = vaultConfig(VAULT_RULES, token, `identities = ["alias@corp.test"]`);
    vault = await startSmtpProxy({ rules: toml });
    vaultFile = join(dir, "vault.toml");
    writeFileSync(vaultFile, `[smtp]\nlisten_addr = "127.0.0.1:1587"\nupstream_addr = "127.0.0.1:587"\n${toml}`);
  });

  afterAll(async () => {
    await vault?.close();
  });

  const cases: { sender: string; to: string[]; expect: { mail: string; message: string } }[] = [
    { sender: "login", to: ["a@corp.test", "x@evil.test"], expect: { mail: "accepted", message: "refused" } },
    { sender: "alias@corp.test", to: ["a@corp.test", "b@corp.test"], expect: { mail: "accepted", message: "sent" } },
    // Not one of the account's identities: refused at MAIL FROM before any rule.
    { sender: "stranger@corp.test", to: ["a@corp.test"], expect: { mail: "refused", message: "refused" } },
  ];
  for (const c of cases) {
    test(`${c.sender} to ${c.to.join(", ")}`, async () => {
      const sender = c.sender === "login" ? upstreams().users[0]!.address : c.sender;
      for (const order of permutations(c.to)) {
        const t = `ex${marker()}`;
        const client = await vaultClient(vault.port, token);
        const rcpt: SendResult["rcpt"] = {};
        let message = "refused";
        const mail = (await client.command(`MAIL FROM:<${sender}>`)).code === 250 ? "accepted" : "refused";
        for (const r of order) {
          const code = (await client.command(`RCPT TO:<${r}>`)).code;
          rcpt[r] = code === 250 ? "accepted" : code === 550 ? "refused" : "not-reached";
        }
        if ((await client.command("DATA")).code === 354) {
          client.write(dataPayload(`From: <${sender}>\r\nTo: ${order.join(", ")}\r\nSubject: ${t}\r\n\r\nhi\r\n`));
          message = (await client.reply(20_000)).code === 250 ? "sent" : "refused";
        }
        client.close();
        const args = ["explain", "-c", vaultFile, "--json", "--op", "send", "--agent", "bot", "--from", sender];
        for (const r of order) args.push("--to", r);
        const p = Bun.spawnSync([process.execPath, MAIN, ...args], {
          cwd: ROOT,
          env: { PATH: process.env["PATH"] ?? "" },
        });
        const answer = JSON.parse(p.stdout.toString()) as ExplainAnswer;
        expect({
          order,
          mail: answer.sender!.refused ? "refused" : "accepted",
          rcpt: Object.fromEntries(answer.recipients!.map((r) => [r.address, r.rcpt])),
          message: answer.action === "allow" ? "sent" : "refused",
        }).toEqual({ order, mail, rcpt, message });
        expect({ mail, message }).toEqual(c.expect);
      }
    });
  }

  test("without --agent the answer is for no agent, and says so", () => {
    const p = Bun.spawnSync(
      [process.execPath, MAIN, "explain", "-c", vaultFile, "--json", "--op", "send", "--to", "a@corp.test"],
      { cwd: ROOT, env: { PATH: process.env["PATH"] ?? "" } },
    );
    const answer = JSON.parse(p.stdout.toString());
    expect(answer).toMatchObject({ action: "deny", agent: null, agents: ["bot"], rule: "deny everything else" });
    expect(answer.note).toContain('"no agent"');
  });
});

// ---- reads ---------------------------------------------------------------------------------------------------

interface ReadCase {
  readonly name: string;
  readonly folder: string;
  readonly from: string;
  readonly to?: string;
  readonly cc?: string;
  readonly subject: string;
  /** How the Subject header is written (default: as is); explain gets `subject` decoded. */
  readonly rawSubject?: string;
  readonly attachment?: boolean;
  readonly expect: "visible" | "hidden";
}

const READS: readonly ReadCase[] = [
  {
    name: "a notification",
    folder: "INBOX",
    from: "notifications@shop.test",
    subject: "Your order",
    expect: "visible",
  },
  {
    name: "a display name that looks allowed",
    folder: "INBOX",
    from: '"notifications@shop.test" <spam@evil.test>',
    subject: "Your order",
    expect: "hidden",
  },
  {
    name: "a notification about a secret",
    folder: "INBOX",
    from: "notifications@shop.test",
    subject: "top secret plans",
    expect: "hidden",
  },
  {
    name: "an encoded secret subject",
    folder: "INBOX",
    from: "notifications@shop.test",
    subject: "top secret plans",
    rawSubject: `=?UTF-8?B?${Buffer.from("top secret plans").toString("base64")}?=`,
    expect: "hidden",
  },
  {
    name: "an invoice with an attachment",
    folder: "INBOX",
    from: "billing@shop.test",
    subject: "Invoice",
    attachment: true,
    expect: "visible",
  },
  {
    name: "an invoice without attachment",
    folder: "INBOX",
    from: "billing@shop.test",
    subject: "Invoice",
    expect: "hidden",
  },
  { name: "a colleague", folder: "INBOX", from: "boss@corp.test", cc: "me@corp.test", subject: "Hi", expect: "hidden" },
  {
    name: "a co-author riding along",
    folder: "INBOX",
    from: "notifications@shop.test, evil@evil.test",
    subject: "Your order",
    expect: "hidden",
  },
  { name: "anything in Archive", folder: "Archive", from: "boss@corp.test", subject: "Old", expect: "visible" },
  { name: "anything in Trash", folder: "Trash", from: "boss@corp.test", subject: "Gone", expect: "visible" },
  {
    name: "a notification in Junk",
    folder: "Junk",
    from: "notifications@shop.test",
    subject: "Spam",
    expect: "hidden",
  },
];

function readMessage(c: ReadCase, token: string): string {
  const headers = [
    `From: ${c.from}`,
    `To: ${c.to ?? mailbox.address}`,
    ...(c.cc === undefined ? [] : [`Cc: ${c.cc}`]),
    `Subject: ${c.rawSubject ?? c.subject}`,
    `Message-ID: <${token}@explain.test>`,
    "MIME-Version: 1.0",
  ];
  if (!c.attachment) return `${headers.join("\r\n")}\r\nContent-Type: text/plain\r\n\r\nbody\r\n`;
  return withAttachment(headers);
}

/** Message-IDs (without brackets) the agent sees in `folder` through the IMAP proxy; null when SELECT fails. */
async function visibleIds(client: ImapFlow, folder: string): Promise<Set<string> | null> {
  try {
    await client.mailboxOpen(folder, { readOnly: true });
  } catch {
    return null;
  }
  const ids = new Set<string>();
  for await (const m of client.fetch("1:*", { envelope: true })) {
    ids.add((m.envelope?.messageId ?? "").replace(/^<|>$/g, ""));
  }
  await client.mailboxClose();
  return ids;
}

describe("reads: the IMAP proxy and explain agree", () => {
  const tokens = new Map<ReadCase, string>();

  beforeAll(async () => {
    const direct = await connectImap(mailbox);
    try {
      for (const c of READS) {
        const token = `rd${marker()}`;
        tokens.set(c, token);
        await direct.append(c.folder, readMessage(c, token));
      }
    } finally {
      await direct.logout();
    }
  });

  test("message by message: exists for the agent exactly when explain says allow", async () => {
    const client = await connectImap(mailbox, { security: "plain", port: imap.port });
    try {
      const seen = new Map<string, Set<string> | null>();
      for (const c of READS) {
        if (!seen.has(c.folder)) seen.set(c.folder, await visibleIds(client, c.folder));
        const ids = seen.get(c.folder)!;
        const proxy = ids?.has(`${tokens.get(c)!}@explain.test`) ? "visible" : "hidden";
        const args = ["--op", "mail:read", "--folder", c.folder, "--from", c.from, "--to", c.to ?? mailbox.address];
        if (c.cc !== undefined) args.push("--cc", c.cc);
        args.push("--subject", c.subject, c.attachment ? "--attachment" : "--no-attachment");
        const [answer] = explainJson(args);
        const simulated = answer!.action === "allow" ? "visible" : "hidden";
        expect({ case: c.name, explain: simulated, action: answer!.action }).toEqual({
          case: c.name,
          explain: proxy,
          action: proxy === "visible" ? "allow" : "deny",
        });
        expect(proxy).toBe(c.expect);
      }
    } finally {
      await client.logout();
    }
  });

  test("folders: LIST shows and SELECT opens a folder exactly when explain says so", async () => {
    const client = await connectImap(mailbox, { security: "plain", port: imap.port });
    try {
      const listed = new Set((await client.list()).map((f) => f.path));
      for (const folder of ["INBOX", "Archive", "Trash", "Junk", "Sent", "Drafts"]) {
        const [answer] = explainJson(["--op", "folder:read", "--folder", folder]);
        const opens = (await visibleIds(client, folder)) !== null;
        expect({ folder, visible: answer!.visible, opens: answer!.action === "allow" }).toEqual({
          folder,
          visible: listed.has(folder),
          opens,
        });
      }
      expect([...listed].sort()).toEqual(["Archive", "INBOX", "Trash"]);
    } finally {
      await client.logout();
    }
  });

  test("STORE \\Deleted on a visible message: allowed exactly when explain allows mail:delete", async () => {
    const raw = await RawImap.open(imap.port);
    try {
      await raw.command("l", `LOGIN "${mailbox.user}" "${mailbox.password}"`);
      let n = 0;
      for (const folder of ["Trash", "INBOX", "Archive"]) {
        const [answer] = explainJson(["--op", "mail:delete", "--folder", folder]);
        expect(statusOf(await raw.command(`s${n}`, `SELECT ${folder}`), `s${n}`)).toContain("OK");
        const reply = await raw.command(`d${n}`, "STORE 1 +FLAGS.SILENT (\\Deleted)");
        const allowed = statusOf(reply, `d${n}`).startsWith(`d${n} OK`);
        expect({ folder, allowed: answer!.action === "allow" }).toEqual({ folder, allowed });
        n++;
      }
    } finally {
      raw.close();
    }
  });
  test("CREATE and DELETE: allowed exactly when explain's folder:write (+ DELETE's extra checks) allows", async () => {
    const raw = await RawImap.open(imap.port);
    try {
      await raw.command("l", `LOGIN "${mailbox.user}" "${mailbox.password}"`);
      // The last item is what the proxy must answer, so that both sides cannot pass by being wrong alike.
      const steps: [string, string, boolean][] = [
        ["CREATE", "Agent", true],
        ["CREATE", "Sent2", false],
        ["CREATE", "Projects", true],
        ["DELETE", "Projects", false], // mail:delete is not allowed there
        ["DELETE", "Agent", true],
      ];
      let n = 0;
      for (const [command, folder, expected] of steps) {
        const [answer] = explainJson(["--op", "folder:write", "--folder", folder]);
        const subtree = answer!.subtree!;
        const predicted =
          answer!.action === "allow" &&
          (command === "CREATE" || (subtree.visible && subtree.mailDelete.action === "allow" && !subtree.filtered));
        const tag = `w${n++}`;
        const ok = statusOf(await raw.command(tag, `${command} ${folder}`), tag).startsWith(`${tag} OK`);
        expect({ command, folder, ok: predicted }).toEqual({ command, folder, ok });
        expect(ok).toBe(expected);
      }
    } finally {
      raw.close();
    }
  });
});
