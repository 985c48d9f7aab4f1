/**
 * `mailgator serve` holding messages while its audit log's file system is full (docs/approvals.md "When the audit
 * log fails"): a small tmpfs holds the log (the state database is elsewhere), a file fills it, and a page view
 * makes the log notice (its row cannot be committed). A held message whose time runs out meanwhile is not expired
 * (its row could not be written) and serve's expiry timer keeps running without an error; once the file is removed
 * the log recovers, the next check expires the message with its APPROVAL EXPIRED row, and SIGTERM ends serve with
 * status 0. `mailgator approvals deny`, whose freshly opened log reads healthy on that full disk, changes nothing
 * and fails when its DENY row cannot be committed, and denies with its row once there is room. Mounting needs root,
 * as `npm test` runs here and in CI.
 */
import { Database } from "bun:sqlite";
import { afterAll, beforeAll, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync, rmSync, truncateSync, unlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import nodemailer from "nodemailer";
import { freePort } from "../../scripts/upstreams/ports.ts";
import { type ApprovalRow, ApprovalStore } from "../../src/approvals/store.ts";
import { SealedStore } from "../../src/state/store.ts";
import { fillUp, mountTmpfs, unmountTmpfs } from "../fixtures/full-disk.ts";
import { createMailbox, heldId, type TestMailbox, uniqueToken } from "../fixtures/index.ts";
import { serveConfig } from "./config.ts";
import { runCli, type Served, serveChild, stopServed } from "./serve-child.ts";

setDefaultTimeout(90_000);

/** Room for the log, its -wal and -shm and the spool folder; the rest is filled. */
const TMPFS_SIZE = "4m";
/** The approval timeout; serve checks for expired messages as often (at least every second). */
const TIMEOUT_MS = 4000;
/** What a fresh AuditLog.open writes on that tmpfs: the -shm (32 KiB) and a -wal of one page (two of the tmpfs). */
const OPEN_ROOM = 40 * 1024;

const mount = mkdtempSync(join(tmpdir(), "mg-approvals-full-"));
const dir = mkdtempSync(join(tmpdir(), "mg-approvals-full-state-"));
const fill = join(mount, "fill");
const file = join(dir, "mailgator.toml");
let mounted = false;
let served: Served | null = null;
let sender: TestMailbox;
let admin: string;
let adminPort = 0;

beforeAll(async () => {
  mountTmpfs(mount, TMPFS_SIZE);
  mounted = true;
  adminPort = await freePort();
  admin = `http://127.0.0.1:${adminPort}`;
  sender = await createMailbox({ name: "approvals-full" });
  writeConfig(`${TIMEOUT_MS / 1000}s`);
});

/** The config, with the approval timeout `timeout`. */
function writeConfig(timeout: string): void {
  writeFileSync(
    file,
    `${serveConfig({ dir, auditPath: join(mount, "audit.db"), adminPort, approvals: { timeout } })}
[[rules]]
name = "outside needs a manager"
action = "ask"
operations = ["send"]
ask_groups = ["managers"]
`,
  );
}

afterAll(async () => {
  if (served !== null && served.proc.exitCode === null && served.proc.signalCode === null) {
    served.proc.kill("SIGTERM");
    await served.proc.exited;
  }
  rmSync(fill, { force: true });
  if (mounted) unmountTmpfs(mount);
  rmSync(mount, { recursive: true, force: true });
  rmSync(dir, { recursive: true, force: true });
});

/** The state database, read as a second process would (WAL); `f` may be async: it is waited for before closing. */
async function withStore<T>(f: (store: ApprovalStore) => T | Promise<T>): Promise<T> {
  const state = SealedStore.open(join(dir, "state.db"), {
    secretsFile: join(dir, "secrets.key"),
    env: {},
    create: false,
  })!;
  try {
    return await f(new ApprovalStore(state));
  } finally {
    state.close();
  }
}

/** The message's state, and whether its bytes can still be read (the sealed record and its parts). */
function heldState(id: string): Promise<[string, boolean]> {
  return withStore(
    async (store): Promise<[string, boolean]> => [store.row(id)!.state, (await store.readMessage(id)) !== null],
  );
}

function auditRows(id: string): [string, string][] {
  const db = new Database(join(mount, "audit.db"), { readonly: true });
  try {
    return (
      db.query("SELECT command, decision FROM audit WHERE target = ? ORDER BY id").all(id) as {
        command: string;
        decision: string;
      }[]
    ).map((r) => [r.command, r.decision]);
  } finally {
    db.close();
  }
}

async function until(what: string, f: () => boolean | Promise<boolean>, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await f())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}:\n${served?.logs() ?? ""}`);
    await Bun.sleep(100);
  }
}

/** Sends one message outside through serve's SMTP port (an `ask` rule holds it) and returns its approval id. */
async function sendHeld(port: number, token: string, text: string): Promise<string> {
  const transport = nodemailer.createTransport({
    host: "127.0.0.1",
    port,
    secure: false,
    ignoreTLS: true,
    auth: { user: sender.user, pass: sender.password },
  });
  let response: string;
  try {
    response = (
      await transport.sendMail({ from: sender.address, to: `out-${token}@outside.example`, subject: token, text })
    ).response;
  } finally {
    transport.close();
  }
  return heldId(response);
}

test("a full audit log: nothing expires without its row, the timer lives on; all of it once it recovers", async () => {
  served = serveChild(file);
  const port = await served.port("SMTP");
  await served.waitForLog(/admin listening on/);
  const token = uniqueToken("full");
  const id = await sendHeld(port, token, `hello ${token}`);

  const filled = fillUp(fill);
  console.log(`filled the ${TMPFS_SIZE} tmpfs with ${filled} bytes`);
  // The next commit fails (the session's last rows, or the page's view row), and the log is unhealthy from then on.
  // A view answered before that has its row kept in memory; one refused (503) has none.
  const link = await withStore((store) => `${admin}/approvals/${id}?t=${store.token(store.row(id) as ApprovalRow)}`);
  const view = (await fetch(link)).status;
  await served.waitForLog(/audit: cannot write to/);
  const mark = served.logs().length;

  // Its time runs out, and two expiry checks pass: still held, its sealed record kept, serve running.
  const expires = await withStore((store) => store.row(id)!.expires);
  await Bun.sleep(Math.max(0, expires - Date.now()) + 2 * TIMEOUT_MS + 500);
  expect(await heldState(id)).toEqual(["held", true]);
  expect(served.proc.exitCode).toBeNull();

  // Space returns: the log's retry writes what it kept, and the next check expires the message with its row.
  unlinkSync(fill);
  await served.waitForLog(/audit: writing to .* again/, mark);
  await until(
    "the expiry",
    async () => (await withStore((store) => store.row(id)!.state)) === "expired",
    3 * TIMEOUT_MS,
  );
  await stopServed(served);
  expect(auditRows(id)).toEqual([
    ["DATA", "ask"],
    ...(view === 200 ? [["APPROVAL VIEWED", "ask"] as [string, string]] : []),
    ["APPROVAL EXPIRED", "deny"],
  ]);
  console.log(`the page view that made the log notice answered ${view}`);
  // 200 before the log noticed, 503 once it had: the page refuses rather than fail (500) with the row unwritten.
  expect([200, 503]).toContain(view);
  expect(served.logs()).not.toMatch(/uncaught|unhandled|expiry check failed/i);
});

test("approvals deny, full audit log: nothing changes, the command fails; once there is room it denies", async () => {
  // A timeout the steps below cannot outlast on a loaded machine: the message must still be held at the second deny.
  writeConfig("10m");
  served = serveChild(file);
  const port = await served.port("SMTP");
  const token = uniqueToken("deny-full");
  const id = await sendHeld(port, token, token);
  // serve stops (nothing expires the message meanwhile); the command's own log is the only writer.
  await stopServed(served);

  // The disk is full but for the room the command's log needs to open (its -shm, and the -wal with the one page
  // its open writes): it opens, reads healthy, and the commit of its first rows is where the full disk shows.
  const filled = fillUp(fill);
  truncateSync(fill, filled - OPEN_ROOM);
  console.log(`filled the ${TMPFS_SIZE} tmpfs with ${filled - OPEN_ROOM} bytes`);
  const refused = runCli(["approvals", "deny", id, "--reason", "not now", "-c", file]);
  console.log(`deny on a full disk: exit ${refused.exitCode}\n${refused.stdout}${refused.stderr}`);
  expect(refused.exitCode).not.toBe(0);
  expect(refused.stdout).toContain(`${id}: not denied, nothing changed: the audit log cannot be written`);
  expect(await heldState(id)).toEqual(["held", true]);

  unlinkSync(fill);
  const denied = runCli(["approvals", "deny", id, "--reason", "not now", "-c", file]);
  expect([denied.exitCode, denied.stdout.trim()]).toEqual([0, `${id}: denied; the message is discarded`]);
  expect(await heldState(id)).toEqual(["denied", false]);
  expect(auditRows(id)).toEqual([
    ["DATA", "ask"],
    ["DENY", "deny"],
  ]);
});
