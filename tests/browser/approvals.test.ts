/**
 * The approval page (docs/approvals.md "Links") in a real browser: Debian's Chromium, driven by playwright-core,
 * opens the links of messages a real `mailgator serve` (the page is on its admin listener) held in front of the
 * test Postfix. Opening a link shows the preview and changes nothing; Approve sends the held bytes once; a second
 * click, a replayed POST and an altered or borrowed token are refused; Deny discards; an expired message says so.
 */
import { Database } from "bun:sqlite";
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { createHash } from "node:crypto";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import nodemailer from "nodemailer";
import { type BrowserContext, chromium, type Locator, type Page, type Response } from "playwright-core";
import { CHROMIUM, installCommand } from "../../scripts/upstreams/install.ts";
import { freePort } from "../../scripts/upstreams/ports.ts";
import { ApprovalStore } from "../../src/approvals/store.ts";
import { SealedStore } from "../../src/state/store.ts";
import { serveConfig } from "../e2e/config.ts";
import { runCli, type Served, serveChild } from "../e2e/serve-child.ts";
import {
  createMailbox,
  sinkMessages,
  smtpListener,
  type TestMailbox,
  uniqueToken,
  waitForSink,
} from "../fixtures/index.ts";

// Chromium's start, a serve child and Postfix deliveries on a loaded machine: waits are on conditions, generous.
setDefaultTimeout(180_000);
const WAIT_MS = 60_000;

/** The flags Chromium runs with here: headless, no sandbox (root), nothing that reaches the network by itself. */
const CHROMIUM_ARGS = [
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

const SENDER = "me@corp.test";
const OUTSIDE_MARK = "(outside the sender's domain)";

interface Server {
  readonly served: Served;
  readonly config: string;
  readonly dir: string;
  /** `[approvals] base_url`: the admin listener's origin, which the page checks POSTs against. */
  readonly base: string;
  readonly smtp: number;
}

const servers: Server[] = [];
let browser: BrowserContext;
let profile: string;
let mailbox: TestMailbox;

beforeAll(async () => {
  if (!existsSync(CHROMIUM))
    throw new Error(`no ${CHROMIUM}: \`npm test\` installs it as root; or run ${installCommand(["chromium"])}`);
  mailbox = await createMailbox({ name: "browser" });
  // A fresh profile for this run; the browser is Debian's, never one playwright would fetch.
  profile = mkdtempSync(join(tmpdir(), "mg-chromium-"));
  browser = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    chromiumSandbox: false,
    args: CHROMIUM_ARGS,
    timeout: WAIT_MS,
  });
  browser.setDefaultTimeout(WAIT_MS);
  browser.setDefaultNavigationTimeout(WAIT_MS);
});

afterAll(async () => {
  await browser?.close();
  for (const s of servers) {
    if (s.served.proc.exitCode === null) s.served.proc.kill("SIGTERM");
    await s.served.proc.exited;
    rmSync(s.dir, { recursive: true, force: true });
  }
  if (profile) rmSync(profile, { recursive: true, force: true });
});

/** Starts `mailgator serve` with an `ask` rule and the approval page on an admin port that base_url names. */
async function startServe(timeout: string): Promise<Server> {
  for (let attempt = 1; ; attempt++) {
    // base_url must name the listener's origin before serve starts: a free port, asked for just before.
    const port = await freePort();
    const dir = mkdtempSync(join(tmpdir(), "mg-browser-"));
    const config = join(dir, "mailgator.toml");
    const listeners = `${smtpListener()}identities = ["${SENDER}"]\n`;
    writeFileSync(
      config,
      `${serveConfig({ listeners, dir, adminPort: port, approvals: { timeout } })}
[[rules]]
name = "Colleagues"
to = "*@corp.test"
operations = ["send"]
action = "allow"

[[rules]]
name = "Outside needs a manager"
operations = ["send"]
action = "ask"
ask_groups = ["managers"]
`,
    );
    const served = serveChild(config);
    try {
      await served.waitForLog(/admin listening on http:\/\/127\.0\.0\.1:\d+/);
      const server: Server = { served, config, dir, base: `http://127.0.0.1:${port}`, smtp: await served.port("SMTP") };
      servers.push(server);
      return server;
    } catch (error) {
      served.proc.kill("SIGKILL");
      await served.proc.exited;
      rmSync(dir, { recursive: true, force: true });
      // Another test took the port between freePort() and the bind: try another one.
      if (attempt >= 3 || !/address already in use|EADDRINUSE/i.test(served.logs())) throw error;
    }
  }
}

interface Held {
  readonly id: string;
  readonly token: string;
  readonly colleague: string;
  readonly outside: string;
  readonly subject: string;
  /** The message exactly as the agent sent it (CRLF line ends). */
  readonly raw: string;
}

/**
 * The agent sends (nodemailer, the agent's own login) to a colleague and to an outside address: held. `o` may name
 * the outside address and the subject, and add header lines (CRLF-terminated) after the Subject.
 */
async function hold(
  server: Server,
  name: string,
  o: { outside?: string; subject?: string; header?: string } = {},
): Promise<Held> {
  const token = uniqueToken(name);
  const colleague = `${token}-colleague@corp.test`;
  const outside = o.outside ?? `${token}@outside.example`;
  const subject = o.subject ?? `Quarterly numbers ${token}`;
  const raw =
    `From: ${SENDER}\r\nTo: ${colleague}, ${outside}\r\nSubject: ${subject}\r\n${o.header ?? ""}` +
    `Date: Wed, 02 Dec 2026 12:00:00 +0000\r\nMessage-ID: <${token}@corp.test>\r\nMIME-Version: 1.0\r\n` +
    `Content-Type: text/plain; charset=us-ascii\r\n\r\nHello,\r\nthe figures for ${token} are attached below.\r\n`;
  const transport = nodemailer.createTransport({
    host: "127.0.0.1",
    port: server.smtp,
    secure: false,
    ignoreTLS: true,
    auth: { user: mailbox.user, pass: mailbox.password },
  });
  try {
    const info = await transport.sendMail({ envelope: { from: SENDER, to: [colleague, outside] }, raw });
    const m = /^250 2\.0\.0 Held for approval as ([0-9a-f]{32})$/.exec(info.response);
    if (m === null) throw new Error(`not held: ${info.response}`);
    return { id: m[1]!, token, colleague, outside, subject, raw };
  } finally {
    transport.close();
  }
}

/** The link as approvers get it: `<base_url>/approvals/<id>?t=<token>`, the token signed by the state's key. */
function linkFor(server: Server, id: string): string {
  const state = SealedStore.open(join(server.dir, "state.db"), {
    secretsFile: join(server.dir, "secrets.key"),
    env: {},
    create: false,
  });
  if (state === null) throw new Error("no state database");
  try {
    const store = new ApprovalStore(state);
    const row = store.row(id);
    if (row === null) throw new Error(`no held message ${id}`);
    return `${server.base}/approvals/${id}?t=${store.token(row)}`;
  } finally {
    state.close();
  }
}

interface Shown {
  readonly state: string;
  readonly expires: string;
  readonly sha256: string;
  readonly decidedBy: string | null;
  readonly preview: unknown;
}

/** `mailgator approvals show ID --json`, as an operator reads it. */
function show(server: Server, id: string): Shown {
  const r = runCli(["approvals", "show", id, "-c", server.config, "--json"]);
  if (r.exitCode !== 0) throw new Error(`approvals show: exit ${r.exitCode}\n${r.stdout}${r.stderr}`);
  return JSON.parse(r.stdout) as Shown;
}

/** Opens a URL in a new tab; returns the tab and the response. */
async function open(url: string): Promise<{ page: Page; response: Response }> {
  const page = await browser.newPage();
  const response = await page.goto(url, { waitUntil: "load" });
  if (response === null) throw new Error(`no response for ${url}`);
  return { page, response };
}

/**
 * Presses a button of the page's forms as an approver does, its confirmation given first (the word typed beside
 * Approve, the box beside Deny ticked: CONFIRM_FIELD): the POST's response, once the page it returned has loaded.
 */
async function press(page: Page, name: "Approve" | "Deny"): Promise<Response> {
  if (name === "Approve") await page.getByRole("textbox").fill("approve");
  else await page.getByRole("checkbox").check();
  const [response] = await Promise.all([
    page.waitForResponse((r) => r.request().method() === "POST"),
    page.getByRole("button", { name, exact: true }).click(),
  ]);
  await page.waitForLoadState("load");
  return response;
}

/**
 * The page's forms as a program that submits them as they come sends them (a mail scanner): each form's address
 * resolved against the page's, its fields with the values the page gives them (hidden and text inputs as written, a
 * checkbox only when ticked), and its first button's name and value.
 */
function formsAsSubmitted(html: string, pageUrl: string): { url: URL; body: URLSearchParams }[] {
  return [...html.matchAll(/<form [^>]*action="([^"]+)"[^>]*>([\s\S]*?)<\/form>/g)].map(([, action, inner]) => {
    const body = new URLSearchParams();
    const attr = (tag: string, name: string) => new RegExp(`\\b${name}="([^"]*)"`).exec(tag)?.[1];
    for (const [tag] of inner!.matchAll(/<input [^>]*>/g)) {
      const type = attr(tag, "type") ?? "text";
      if (type === "checkbox" && !/\bchecked\b/.test(tag)) continue;
      body.append(attr(tag, "name")!, attr(tag, "value") ?? (type === "checkbox" ? "on" : ""));
    }
    const button = /<button [^>]*>/.exec(inner!)?.[0];
    if (button !== undefined) body.append(attr(button, "name")!, attr(button, "value")!);
    return { url: new URL(action!, pageUrl), body };
  });
}

/** The text a person sees (rendered, as Chromium lays it out). */
// biome-ignore lint/performance/useDomNodeTextContent: a playwright Locator, not a DOM node
const seen = (locator: Locator) => locator.innerText();
const heading = (page: Page) => seen(page.locator("h1"));
const bodyText = (page: Page) => seen(page.locator("body"));
const buttons = (page: Page) => page.getByRole("button").allInnerTexts();

/** An allowed send through the same proxy, waited for in the sink: Postfix had time to deliver anything before. */
async function control(server: Server): Promise<void> {
  const token = uniqueToken("control");
  const transport = nodemailer.createTransport({
    host: "127.0.0.1",
    port: server.smtp,
    secure: false,
    ignoreTLS: true,
    auth: { user: mailbox.user, pass: mailbox.password },
  });
  try {
    await transport.sendMail({ from: SENDER, to: `${token}@corp.test`, subject: token, text: "control" });
  } finally {
    transport.close();
  }
  await waitForSink(token, { timeoutMs: WAIT_MS });
}

/** A sink copy is Postfix's delivery header fields, then the agent's message unchanged (Maildir stores LF). */
function expectSameBytes(delivered: string, raw: string): void {
  const sent = raw.replace(/\r\n/g, "\n");
  expect(delivered.endsWith(sent)).toBe(true);
  const added = delivered.slice(0, delivered.length - sent.length);
  for (const line of added.split("\n").filter((l) => l !== ""))
    expect(line).toMatch(/^(Return-Path|X-Original-To|Delivered-To|Received):|^[ \t]/);
}

describe("the approval page in Chromium", () => {
  let server: Server;
  beforeAll(async () => {
    server = await startServe("24h");
  });

  test("the link shows the preview, changes nothing; Approve sends once; a 2nd click, a replay: refused", async () => {
    const held = await hold(server, "approve");
    const link = linkFor(server, held.id);
    const before = show(server, held.id);
    expect(before.state).toBe("held");
    // The message held is the agent's, byte for byte: its SHA-256 is what the link is bound to.
    expect(before.sha256).toBe(createHash("sha256").update(held.raw).digest("hex"));

    // Two tabs open the link (a mail scanner, then the approver; or two approvers).
    const first = await open(link);
    const second = await open(link);
    for (const { page, response } of [first, second]) {
      expect(response.status()).toBe(200);
      expect(response.headers()["cache-control"]).toBe("no-store");
      expect(await heading(page)).toBe("Approve this message?");
      const text = await bodyText(page);
      expect(text).toContain(SENDER);
      expect(text).toContain(held.subject);
      expect(text).toContain(`the figures for ${held.token} are attached below.`);
      expect(text).toContain("Outside needs a manager");
      // Every envelope recipient; only the one outside the sender's domain is marked.
      const envelopeTo = 'dt:text-is("To") + dd';
      expect(await seen(page.locator(envelopeTo, { hasText: held.outside }))).toBe(`${held.outside} ${OUTSIDE_MARK}`);
      expect(await seen(page.locator(envelopeTo, { hasText: held.colleague }))).toBe(held.colleague);
      // The header's fields as the recipient's client shows them (docs/approvals.md "What approvers see").
      expect(await seen(page.locator('dt:text-is("In the header") + dd', { hasText: "From: " }))).toContain(SENDER);
      expect(await buttons(page)).toEqual(["Deny", "Approve"]);
    }
    // Opening it changed nothing: still held, the same message, nothing upstream.
    const after = show(server, held.id);
    expect(after.state).toBe("held");
    expect(after.sha256).toBe(before.sha256);
    expect(after.preview).toEqual(before.preview);
    expect(sinkMessages(held.token)).toHaveLength(0);

    // Approve in the first tab; the POST the browser sent is kept to be replayed.
    const posted = first.page.waitForRequest((r) => r.method() === "POST");
    const approved = await press(first.page, "Approve");
    const request = await posted;
    expect(approved.status()).toBe(200);
    expect(await heading(first.page)).toBe("Approved");
    expect(await bodyText(first.page)).toContain("The message was sent.");
    expect(request.headers()["origin"]).toBe(server.base);

    // One copy per envelope recipient reaches Postfix, with the bytes the agent sent.
    const copies = await waitForSink(held.token, { count: 2, timeoutMs: WAIT_MS, settleMs: 1000 });
    expect(copies.map((c) => c.originalTo).sort()).toEqual([held.colleague, held.outside].sort());
    for (const copy of copies) expectSameBytes(copy.raw(), held.raw);
    const sent = show(server, held.id);
    expect(sent.state).toBe("sent");
    expect(sent.decidedBy).toBe("link:managers");
    expect(sent.preview).toBeNull();

    // The second tab still shows the buttons: its click is refused, and says who decided.
    const again = await press(second.page, "Approve");
    expect(again.status()).toBe(409);
    expect(await heading(second.page)).toBe("Already decided");
    expect(await bodyText(second.page)).toContain("This message was already approved by link:managers and sent.");

    // Back in the first tab: the page is not cached (no-store), so it is fetched again and says it is decided.
    const back = await first.page.goBack({ waitUntil: "load" });
    expect(back?.status()).toBe(409);
    expect(await heading(first.page)).toBe("Already decided");
    expect(await buttons(first.page)).toEqual([]);

    // The browser's POST replayed byte for byte (same origin, same token): refused.
    const replay = await fetch(request.url(), {
      method: "POST",
      headers: {
        "content-type": request.headers()["content-type"] ?? "",
        origin: request.headers()["origin"] ?? "",
      },
      body: request.postData() ?? "",
    });
    expect(replay.status).toBe(409);
    expect(await replay.text()).toContain("already approved");
    // The link itself, opened again: decided.
    const reopened = await open(link);
    expect(reopened.response.status()).toBe(409);
    expect(await bodyText(reopened.page)).toContain("already approved by link:managers and sent");

    await control(server);
    expect(sinkMessages(held.token)).toHaveLength(2);
    for (const tab of [first, second, reopened]) await tab.page.close();
  });

  // docs/approvals.md "Links": a mail scanner fetches the link and submits the page's form as it comes. It passes the
  // origin check (it posts from the page's own address), so only the confirmation (CONFIRM_FIELD) keeps it from
  // deciding: Deny is the first form, and neither form decides without its confirmation.
  test("a scanner posting the page's forms as they come decides nothing; a person types approve: sent", async () => {
    const held = await hold(server, "scanner");
    const link = linkFor(server, held.id);
    const scanned = await fetch(link);
    expect(scanned.status).toBe(200);
    const forms = formsAsSubmitted(await scanned.text(), link);
    // Deny first: a scanner that submits the first form never sends an approval.
    expect(forms.map((f) => f.body.get("action"))).toEqual(["deny", "approve"]);
    const scannerPosts: [string, URL, string][] = forms.map((f) => [
      `form ${f.body.get("action")}`,
      f.url,
      `${f.body}`,
    ]);
    const t = forms[0]!.body.get("t")!;
    const target = forms[0]!.url;
    // Forged by hand: the token and an action with no confirmation, a confirmation of another word or action, two.
    for (const body of [
      `t=${t}&action=approve`,
      `t=${t}&action=approve&confirm=yes`,
      `t=${t}&action=approve&confirm=deny`,
      `t=${t}&action=approve&confirm=approve&confirm=approve`,
      `t=${t}&action=deny&confirm=`,
    ])
      scannerPosts.push([body.replace(t, "T"), target, body]);
    for (const [what, url, body] of scannerPosts) {
      const r = await fetch(url, {
        method: "POST",
        headers: { "content-type": "application/x-www-form-urlencoded", origin: server.base, referer: link },
        body,
      });
      const text = await r.text();
      expect(`${what}: ${r.status} ${text.includes("Nothing was decided")}`).toBe(`${what}: 400 true`);
      expect(text).toContain("The message is still held; this link can be used again.");
      expect(show(server, held.id).state).toBe("held");
    }
    // Nothing decided, nothing recorded as a decision, nothing upstream.
    expect(auditRows(server, held.id).map((r) => r.command)).toEqual(["DATA", "APPROVAL VIEWED"]);
    await control(server);
    expect(sinkMessages(held.token)).toHaveLength(0);

    // In Chromium the buttons send nothing without their confirmation (the fields are `required`): no POST.
    const { page } = await open(link);
    expect(await buttons(page)).toEqual(["Deny", "Approve"]);
    const posts: string[] = [];
    page.on("request", (r) => {
      if (r.method() === "POST") posts.push(r.postData() ?? "");
    });
    await page.getByRole("button", { name: "Deny", exact: true }).click();
    await page.getByRole("button", { name: "Approve", exact: true }).click();
    await page.getByRole("textbox").fill("yes");
    await page.getByRole("button", { name: "Approve", exact: true }).click();
    await Bun.sleep(1000);
    expect(posts).toEqual([]);
    expect(await heading(page)).toBe("Approve this message?");
    expect(show(server, held.id).state).toBe("held");

    // A person types the word: the same link approves, and the held bytes go out once per recipient.
    const approved = await press(page, "Approve");
    expect(approved.status()).toBe(200);
    expect(await heading(page)).toBe("Approved");
    expect(posts).toHaveLength(1);
    expect(new URLSearchParams(posts[0]).getAll("confirm")).toEqual(["approve"]);
    const copies = await waitForSink(held.token, { count: 2, timeoutMs: WAIT_MS, settleMs: 1000 });
    expect(copies.map((c) => c.originalTo).sort()).toEqual([held.colleague, held.outside].sort());
    for (const copy of copies) expectSameBytes(copy.raw(), held.raw);
    expect(show(server, held.id).state).toBe("sent");
    await page.close();
  });

  test("a long outside domain and subject wrap: nothing runs off the page, the mark stays in view", async () => {
    // An address whose domain runs on past the window (labels of 60, RFC 5321's 255 octets at most) would push the
    // end of it, and the outside-domain mark after it, out of the approver's sight.
    const label = "a".repeat(60);
    const outside = `x${uniqueToken("w")}@corp.test.${label}.${label}.outside.example`;
    const held = await hold(server, "wrap", { outside, subject: `Numbers-${"y".repeat(300)}` });
    const { page } = await open(linkFor(server, held.id));
    try {
      const width = (await page.evaluate("document.documentElement.clientWidth")) as number;
      expect(await page.evaluate("document.documentElement.scrollWidth")).toBe(width);
      const mark = page.locator('dt:text-is("To") + dd', { hasText: OUTSIDE_MARK }).locator("strong");
      const box = await mark.boundingBox();
      expect(box).not.toBeNull();
      expect(box!.x + box!.width).toBeLessThanOrEqual(width);
      // Wrapped, not cut: the whole address is there to read.
      expect((await seen(page.locator('dt:text-is("To") + dd', { hasText: OUTSIDE_MARK }))).replace(/\s/g, "")).toBe(
        `${outside}${OUTSIDE_MARK.replace(/\s/g, "")}`,
      );
    } finally {
      await page.close();
    }
  });

  test("every header field that goes out is on the page, not only those a mail client shows", async () => {
    // The agent's payload rides in fields a recipient's client keeps out of sight but that reach the outside
    // recipient all the same (Postfix passes them on): the approver must see them before saying yes.
    const secret = `card 4111-1111-1111-1111 ${uniqueToken("leak")}`;
    const header =
      `X-Customer-Export: ${secret}\r\n` +
      `Comments: =?utf-8?q?Kontoliste_f=C3=BCr_Bob?=\r\n` +
      `X-Long: ${"z".repeat(300)}\r\n`;
    const held = await hold(server, "other-fields", { header });
    const { page, response } = await open(linkFor(server, held.id));
    expect(response.status()).toBe(200);
    const other = page.locator('dt:text-is("Also in the header") + dd');
    const lines = await other.allInnerTexts();
    expect(lines).toContain(`X-Customer-Export: ${secret}`);
    // Decoded as a client that shows it would show it, and cut at 200 characters saying so.
    expect(lines).toContain("Comments: Kontoliste für Bob");
    expect(lines).toContain(`X-Long: ${"z".repeat(200)}… (field cut)`);
    expect(lines).toContain("Date: Wed, 02 Dec 2026 12:00:00 +0000");
    // What was on the page is what goes out: approved, the field reaches the outside recipient as written.
    expect((await press(page, "Approve")).status()).toBe(200);
    const copies = await waitForSink(held.token, { count: 2, timeoutMs: WAIT_MS, settleMs: 1000 });
    for (const copy of copies) {
      expectSameBytes(copy.raw(), held.raw);
      expect(copy.raw()).toContain(`X-Customer-Export: ${secret}\n`);
    }
    await page.close();
  });

  test("an altered token, or one borrowed from another message, is refused and changes nothing", async () => {
    const held = await hold(server, "altered");
    const other = await hold(server, "other");
    const link = linkFor(server, held.id);
    const url = new URL(link);
    const token = url.searchParams.get("t")!;
    // One character of the signature changed.
    const at = Math.floor(token.length / 2);
    const altered = `${token.slice(0, at)}${token[at] === "A" ? "B" : "A"}${token.slice(at + 1)}`;

    for (const bad of [
      `${server.base}/approvals/${held.id}?t=${altered}`,
      `${server.base}/approvals/${held.id}`,
      `${server.base}/approvals/${other.id}?t=${token}`,
    ]) {
      const { page, response } = await open(bad);
      expect(response.status()).toBe(403);
      expect(await heading(page)).toBe("Link not valid");
      expect(await buttons(page)).toEqual([]);
      await page.close();
    }

    // A genuine page whose hidden token was altered before Approve is pressed: refused, nothing sent.
    const { page } = await open(link);
    await page.locator('input[name="t"]').evaluateAll((inputs, value) => {
      for (const input of inputs) (input as { value: string }).value = value;
    }, altered);
    const refused = await press(page, "Approve");
    expect(refused.status()).toBe(403);
    expect(await heading(page)).toBe("Link not valid");
    expect(show(server, held.id).state).toBe("held");
    expect(show(server, other.id).state).toBe("held");

    // The genuine link still works afterwards (nothing was used up): deny both to leave nothing held.
    await page.goto(link, { waitUntil: "load" });
    expect((await press(page, "Deny")).status()).toBe(200);
    await page.goto(linkFor(server, other.id), { waitUntil: "load" });
    expect((await press(page, "Deny")).status()).toBe(200);
    await page.close();
    await control(server);
    expect(sinkMessages(held.token)).toHaveLength(0);
    expect(sinkMessages(other.token)).toHaveLength(0);
  });

  test("Deny discards the message: it never arrives, and cannot be approved afterwards", async () => {
    const held = await hold(server, "deny");
    const link = linkFor(server, held.id);
    const { page } = await open(link);
    expect(await buttons(page)).toEqual(["Deny", "Approve"]);
    const denied = await press(page, "Deny");
    expect(denied.status()).toBe(200);
    expect(await heading(page)).toBe("Denied");
    expect(await bodyText(page)).toContain("The message was discarded; nothing was sent.");
    const shown = show(server, held.id);
    expect(shown.state).toBe("denied");
    expect(shown.decidedBy).toBe("link:managers");
    expect(shown.preview).toBeNull();

    await page.goto(link, { waitUntil: "load" });
    expect(await heading(page)).toBe("Already decided");
    expect(await bodyText(page)).toContain("This message was already denied by link:managers; it was discarded.");
    expect(await buttons(page)).toEqual([]);
    await page.close();
    // Nor from the command line.
    const cli = runCli(["approvals", "approve", held.id, "-c", server.config, "--json"]);
    expect(cli.exitCode).toBe(1);
    expect(JSON.parse(cli.stdout)).toEqual({ id: held.id, outcome: "refused", state: "denied" });

    await control(server);
    expect(sinkMessages(held.token)).toHaveLength(0);
  });
});

describe("an expired message in Chromium", () => {
  test("a page opened before the expiry refuses Approve after it; a link opened after it says expired", async () => {
    // Long enough to hold a message and open its page on a loaded machine; the test then waits it out.
    const server = await startServe("20s");
    const opened = await hold(server, "expiring");
    const late = await hold(server, "late");
    const { page } = await open(linkFor(server, opened.id));
    expect(await heading(page)).toBe("Approve this message?");
    expect(await buttons(page)).toEqual(["Deny", "Approve"]);
    const lateLink = linkFor(server, late.id);

    const expires = Math.max(Date.parse(show(server, opened.id).expires), Date.parse(show(server, late.id).expires));
    while (Date.now() <= expires + 200) await Bun.sleep(100);

    const refused = await press(page, "Approve");
    expect(refused.status()).toBe(410);
    expect(await heading(page)).toBe("Expired");
    expect(await bodyText(page)).toContain("This message expired before anyone decided; it was discarded.");
    expect(show(server, opened.id).state).toBe("expired");

    // Opened after the expiry: the one the click marked "expired", and the one still "held" past its time (until
    // serve's minute timer marks it): both pages say expired, without buttons.
    for (const link of [linkFor(server, opened.id), lateLink]) {
      const tab = await open(link);
      expect(tab.response.status()).toBe(410);
      expect(await heading(tab.page)).toBe("Expired");
      expect(await bodyText(tab.page)).toContain("This message expired before anyone decided; it was discarded.");
      expect(await buttons(tab.page)).toEqual([]);
      await tab.page.close();
    }
    await page.close();

    await control(server);
    expect(sinkMessages(opened.token)).toHaveLength(0);
    expect(sinkMessages(late.token)).toHaveLength(0);
  });
});

/** The audit rows about a held message (its id is their target), oldest first: `mailgator audit --json`. */
function auditRows(server: Server, id: string): { command: string; decision: string; reason: string }[] {
  const r = runCli(["audit", "-c", server.config, "--json", "--limit", "1000"]);
  if (r.exitCode !== 0) throw new Error(`audit: exit ${r.exitCode}\n${r.stdout}${r.stderr}`);
  return r.stdout
    .trim()
    .split("\n")
    .map((line) => JSON.parse(line) as { command: string; decision: string; reason: string; target: string })
    .filter((row) => row.target === id)
    .map(({ command, decision, reason }) => ({ command, decision, reason }));
}

describe("the page's headers, HEAD, and a held message whose record does not open", () => {
  let server: Server;
  beforeAll(async () => {
    server = await startServe("24h");
  });

  test("CSP: base-uri 'none', only the page's style; every answer nosniff; HEAD refused, records nothing", async () => {
    const held = await hold(server, "headers");
    const link = linkFor(server, held.id);
    // HEAD shows nothing, so it must not record a view: refused (405), with the methods the page takes.
    const head = await fetch(link, { method: "HEAD" });
    expect(head.status).toBe(405);
    expect(head.headers.get("allow")).toBe("GET, POST");
    expect(head.headers.get("x-content-type-options")).toBe("nosniff");
    expect(auditRows(server, held.id).map((r) => r.command)).toEqual(["DATA"]);

    const { page, response } = await open(link);
    expect(response.status()).toBe(200);
    const headers = response.headers();
    expect(headers["x-content-type-options"]).toBe("nosniff");
    // The one style the CSP lets apply is the page's own <style> (its SHA-256): none other, inline or fetched.
    const style = createHash("sha256")
      .update((await page.locator("style").textContent()) ?? "")
      .digest("base64");
    expect(headers["content-security-policy"]).toBe(
      `default-src 'none'; style-src 'sha256-${style}'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'`,
    );
    expect((await press(page, "Deny")).status()).toBe(200);
    expect(await heading(page)).toBe("Denied");
    expect(auditRows(server, held.id).map((r) => r.command)).toEqual(["DATA", "APPROVAL VIEWED", "DENY"]);
    await page.close();
  });

  test("a record that does not open: a page that says so and how to deny it; the CLI denies it", async () => {
    const held = await hold(server, "unreadable");
    const link = linkFor(server, held.id);
    // The sealed record altered on disk (the same as one sealed under another secrets key: it does not open).
    const db = new Database(join(server.dir, "state.db"));
    db.run("PRAGMA busy_timeout = 5000");
    db.run("UPDATE sealed SET box = zeroblob(length(box)) WHERE kind = 'held' AND id = ?", [held.id]);
    db.close();

    const { page, response } = await open(link);
    expect(response.status()).toBe(500);
    const headers = response.headers();
    expect(headers["content-type"]).toBe("text/html; charset=utf-8");
    expect(headers["x-content-type-options"]).toBe("nosniff");
    expect(headers["content-security-policy"]).toContain("default-src 'none'");
    expect(headers["cache-control"]).toBe("no-store");
    expect(await heading(page)).toBe("Cannot be read");
    const text = await bodyText(page);
    expect(text).toContain("cannot be read");
    expect(text).toContain(`mailgator approvals deny ${held.id}`);
    expect(await buttons(page)).toEqual([]);
    await page.close();
    // The view is recorded as what it was: the page was opened and nothing could be shown.
    const viewed = auditRows(server, held.id).filter((r) => r.command === "APPROVAL VIEWED");
    expect(viewed).toHaveLength(1);
    expect(viewed[0]!.decision).toBe("error");
    expect(viewed[0]!.reason).toContain("the held message cannot be read");

    // What the page says to do works: the message is denied and discarded.
    const cli = runCli(["approvals", "deny", held.id, "-c", server.config, "--json"]);
    expect({ exit: cli.exitCode, out: cli.stdout.trim(), err: cli.stderr }).toMatchObject({ exit: 0 });
    expect(JSON.parse(cli.stdout)).toEqual({ id: held.id, outcome: "denied", state: "held" });
    const again = await open(link);
    expect(again.response.status()).toBe(409);
    expect(await heading(again.page)).toBe("Already decided");
    await again.page.close();
    await control(server);
    expect(sinkMessages(held.token)).toHaveLength(0);
  });
});
