/**
 * The admin listener under names, in Chromium (docs/operations.md "Health and metrics"): Chromium resolves two names
 * to 127.0.0.1 (--host-resolver-rules), as DNS would. `[approvals] base_url` names one: its approval page opens and
 * its Approve sends, so a reverse proxy that passes the name on keeps working. The other stands for a web page that
 * pointed its own name at 127.0.0.1 (DNS rebinding): the listener refuses it (421), so /metrics, /healthz and the
 * pages are not read as that page's origin. The preview also keeps a hostile subject, text and file name as text.
 */
import { afterAll, beforeAll, expect, setDefaultTimeout, test } from "bun:test";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import nodemailer from "nodemailer";
import { type Browser, chromium } from "playwright-core";
import { CHROMIUM, installCommand } from "../../scripts/upstreams/install.ts";
import { freePort } from "../../scripts/upstreams/ports.ts";
import { ApprovalStore } from "../../src/approvals/store.ts";
import { SealedStore } from "../../src/state/store.ts";
import { serveConfig } from "../e2e/config.ts";
import { type Served, serveChild } from "../e2e/serve-child.ts";
import { createMailbox, heldId, smtpListener, type TestMailbox, uniqueToken, waitForSink } from "../fixtures/index.ts";

setDefaultTimeout(180_000);
const WAIT_MS = 60_000;
const SENDER = "me@corp.test";
const NAME = "mail-admin.test";
const REBOUND = "rebind.test";

let browser: Browser;
let mailbox: TestMailbox;
let served: Served;
let dir: string;
let port: number;

beforeAll(async () => {
  if (!existsSync(CHROMIUM))
    throw new Error(`no ${CHROMIUM}: \`npm test\` installs it as root; or run ${installCommand(["chromium"])}`);
  mailbox = await createMailbox({ name: "browser-host" });
  port = await freePort();
  dir = mkdtempSync(join(tmpdir(), "mg-browser-host-"));
  const config = join(dir, "mailgator.toml");
  const listeners = `${smtpListener()}identities = ["${SENDER}"]\n`;
  const approvals = { baseUrl: `http://${NAME}:${port}` };
  writeFileSync(
    config,
    `${serveConfig({ listeners, dir, adminPort: port, approvals })}
[[rules]]
name = "Everything needs a manager"
operations = ["send"]
action = "ask"
ask_groups = ["managers"]
`,
  );
  served = serveChild(config);
  await served.waitForLog(/admin listening on http:\/\/127\.0\.0\.1:\d+/);
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    chromiumSandbox: false,
    args: [
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      `--host-resolver-rules=MAP ${NAME} 127.0.0.1, MAP ${REBOUND} 127.0.0.1`,
    ],
    timeout: WAIT_MS,
  });
});

afterAll(async () => {
  await browser?.close();
  if (served?.proc.exitCode === null) served.proc.kill("SIGTERM");
  await served?.proc.exited;
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function linkPath(id: string): string {
  const state = SealedStore.open(join(dir, "state.db"), {
    secretsFile: join(dir, "secrets.key"),
    env: {},
    create: false,
  });
  if (state === null) throw new Error("no state database");
  try {
    const store = new ApprovalStore(state);
    return `/approvals/${id}?t=${store.token(store.row(id)!)}`;
  } finally {
    state.close();
  }
}

test("base_url's name serves the page and its Approve; a rebound name is refused everywhere", async () => {
  const token = uniqueToken("host");
  const hostile = `<img src=x onerror="document.title='pwned'">`;
  const raw =
    `From: ${SENDER}\r\nTo: ${token}@corp.test\r\nSubject: ${hostile} ${token}\r\nMIME-Version: 1.0\r\n` +
    `Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/html\r\n\r\n` +
    `<script>document.title='pwned'</script>${token}\r\n--b\r\nContent-Type: application/octet-stream\r\n` +
    `Content-Disposition: attachment; filename="<b onmouseover=x>.pdf"\r\n\r\nAAAA\r\n--b--\r\n`;
  const transport = nodemailer.createTransport({
    host: "127.0.0.1",
    port: await served.port("SMTP"),
    secure: false,
    ignoreTLS: true,
    auth: { user: mailbox.user, pass: mailbox.password },
  });
  const info = await transport.sendMail({ envelope: { from: SENDER, to: [`${token}@corp.test`] }, raw });
  transport.close();
  const id = heldId(info.response);
  const path = linkPath(id);

  const page = await browser.newPage();
  // A page at the rebound name reads nothing: not the metrics, the health report, nor the approval page.
  for (const p of ["/metrics", "/healthz", path]) {
    const r = await page.goto(`http://${REBOUND}:${port}${p}`, { waitUntil: "load" });
    expect(r?.status()).toBe(421);
    expect(await page.content()).not.toContain("mailgator_");
    expect(await page.content()).not.toContain(token);
  }

  const opened = await page.goto(`http://${NAME}:${port}${path}`, { waitUntil: "load" });
  expect(opened?.status()).toBe(200);
  expect(await page.title()).toBe("Approve this message?");
  // biome-ignore lint/performance/useDomNodeTextContent: a playwright Locator, not a DOM node
  const text = await page.locator("body").innerText();
  expect(text).toContain(`${hostile} ${token}`);
  expect(text).toContain("<b onmouseover=x>.pdf");
  expect(text).toContain(`<script>document.title='pwned'</script>${token}`);
  expect(await page.locator("img, script, b").count()).toBe(0);
  await page.getByRole("textbox").fill("approve");
  const [response] = await Promise.all([
    page.waitForResponse((r) => r.request().method() === "POST"),
    page.getByRole("button", { name: "Approve", exact: true }).click(),
  ]);
  expect(response.status()).toBe(200);
  await page.waitForLoadState("load");
  expect(await page.title()).toBe("Approved");
  await waitForSink(token, { timeoutMs: WAIT_MS });
  await page.close();
});
