/**
 * Approval links withdrawn when the config lets an agent read a mailbox a notice may lie in (docs/approvals.md
 * "Links"): `mailgator serve` as a child process, a vault agent sending through it with nodemailer, Postfix
 * delivering the approver's notice. Once a reload (SIGHUP) or a restart gives an agent the account the notices are
 * sent as, the links sent before no longer work; `mailgator approvals` still decides, and a later notice's link works.
 */

import { Database } from "bun:sqlite";
import { expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import nodemailer from "nodemailer";
import { freePort } from "../../scripts/upstreams/ports.ts";
import { generateToken } from "../../src/vault/token.ts";
import { heldId, uniqueToken, upstreams } from "../fixtures/index.ts";
import { tempRoot } from "../fixtures/temp.ts";
import { sinkCopies } from "../smtp/helpers.ts";
import { noticesIn, waitFor } from "../smtp/notice-reader.ts";
import { accountToml, agentToml, serveConfig } from "./config.ts";
import { cleanExit, runCli, serveChild } from "./serve-child.ts";

/** Every folder this file makes is in here, removed after its tests. */
const TMP = tempRoot("mg-link-");

setDefaultTimeout(60_000);

/**
 * A vault agent "bot" on alice's mailbox whose sends ask `boss`; notices go as bob; with `bobReader`, an agent reads
 * bob's mailbox.
 */
function configFor(admin: number, boss: string, botToken: string, bobReader: boolean): string {
  const up = upstreams();
  const [alice, bob] = [up.users[0]!, up.users[1]!];
  const reader = bobReader ? `\n${agentToml("reader", generateToken(), "notices")}` : "";
  return serveConfig(
    { adminPort: admin, approvals: { notifyAccount: "notices", managers: [boss] } },
    `
${agentToml("bot", botToken, "main")}${reader}
${accountToml("main", alice)}
${accountToml("notices", bob)}
[[rules]]
name = "every send needs a manager"
action = "ask"
operations = ["send"]
ask_groups = ["managers"]
`,
  );
}

/** Sends one message as "bot" through the SMTP listener on `port`; returns its approval id. */
async function sendHeld(port: number, token: string, tag: string): Promise<string> {
  const alice = upstreams().users[0]!;
  const transport = nodemailer.createTransport({
    host: "127.0.0.1",
    port,
    secure: false,
    ignoreTLS: true,
    auth: { user: "bot", pass: token },
  });
  try {
    const info = await transport.sendMail({
      from: alice.user,
      to: `${tag}@outside.example`,
      subject: tag,
      text: `Hello ${tag}\n`,
    });
    return heldId(info.response);
  } finally {
    transport.close();
  }
}

/** The link of the notice for `id` that `boss` got (the `n`th, 1-based), once it has arrived. */
async function linkFor(id: string, admin: number, n = 1): Promise<string> {
  const notices = await waitFor("notices", () => noticesIn(upstreams().sink, id), n);
  const body = notices.at(-1)!.body;
  const link = body.split("\n").find((l) => l.startsWith(`http://127.0.0.1:${admin}/approvals/${id}?t=`));
  expect(link).toBeDefined();
  return link!;
}

test("a reload giving an agent the notices' account withdraws the links sent; the CLI still decides", async () => {
  const m = uniqueToken("lw");
  const boss = `boss-${m}@corp.test`;
  const admin = await freePort();
  const token = generateToken();
  const file = join(mkdtempSync(join(TMP, "mg-link-withdrawn-")), "mailgator.toml");
  writeFileSync(file, configFor(admin, boss, token, false));
  const served = serveChild(file);
  try {
    const port = await served.port("SMTP");
    const id = await sendHeld(port, token, `withdrawn-${m}`);
    const link = await linkFor(id, admin);
    expect((await fetch(link)).status).toBe(200);

    // An agent now uses the account the notice was sent as: its Sent folder may hold the link.
    writeFileSync(file, configFor(admin, boss, token, true));
    const mark = served.logs().length;
    process.kill(served.proc.pid, "SIGHUP");
    expect(await served.waitForLog(/reloaded |reload failed/, mark)).toMatch(/reloaded /);
    expect(await served.waitForLog(/approval link\(s\) withdrawn/, mark)).toContain("1 approval link(s) withdrawn");
    const page = await fetch(link);
    expect(page.status).toBe(403);
    expect(await page.text()).toContain("This link was withdrawn");
    const post = await fetch(`http://127.0.0.1:${admin}/approvals/${id}`, {
      method: "POST",
      body: `t=${encodeURIComponent(new URL(link).searchParams.get("t")!)}&action=approve&confirm=approve`,
      headers: { "content-type": "application/x-www-form-urlencoded", origin: `http://127.0.0.1:${admin}` },
    });
    expect(post.status).toBe(403);
    await Bun.sleep(500);
    expect(sinkCopies(`Hello withdrawn-${m}`)).toHaveLength(0);

    // A reload that changes nothing withdraws nothing more.
    const again = served.logs().length;
    process.kill(served.proc.pid, "SIGHUP");
    expect(await served.waitForLog(/reloaded |reload failed/, again)).toMatch(/reloaded /);
    // A withdrawal is logged in the reload's own turn, just after its "reloaded" line: well within this wait.
    await Bun.sleep(1000);
    expect(served.logs().slice(again)).not.toContain("link(s) withdrawn");

    const audit = runCli(["audit", "-c", file, "--json", "--command", "APPROVAL LINK WITHDRAWN"]);
    const rows = audit.stdout
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as { command: string; target: string | null; decision: string });
    expect(rows.filter((r) => r.command === "APPROVAL LINK WITHDRAWN" && r.target === id)).toEqual([
      expect.objectContaining({ decision: "deny" }),
    ]);
    const cli = runCli(["approvals", "approve", id, "-c", file]);
    expect(cli.exitCode).toBe(0);
    await waitFor("copies", () => sinkCopies(`Hello withdrawn-${m}`), 1);
  } finally {
    served.proc.kill("SIGTERM");
  }
  await cleanExit(served);
});

test("a restart under such a config withdraws them too; another restart under it withdraws nothing more", async () => {
  const m = uniqueToken("lr");
  const boss = `boss-${m}@corp.test`;
  const admin = await freePort();
  const token = generateToken();
  const file = join(mkdtempSync(join(TMP, "mg-link-restart-")), "mailgator.toml");
  writeFileSync(file, configFor(admin, boss, token, false));
  const first = serveChild(file);
  let id: string;
  let link: string;
  try {
    id = await sendHeld(await first.port("SMTP"), token, `restart-${m}`);
    link = await linkFor(id, admin);
  } finally {
    first.proc.kill("SIGTERM");
  }
  await cleanExit(first);

  writeFileSync(file, configFor(admin, boss, token, true));
  const second = serveChild(file);
  try {
    await second.port("SMTP");
    await second.waitForLog(/approval link\(s\) withdrawn/);
    expect((await fetch(link)).status).toBe(403);
  } finally {
    second.proc.kill("SIGTERM");
  }
  await cleanExit(second);
  const third = serveChild(file);
  try {
    await third.port("SMTP");
    expect(third.logs()).not.toContain("link(s) withdrawn");
    expect((await fetch(link)).status).toBe(403);
    expect(runCli(["approvals", "deny", id, "-c", file]).exitCode).toBe(0);
  } finally {
    third.proc.kill("SIGTERM");
  }
  await cleanExit(third);
});

/** Makes the state database beside `file` refuse to record the readers' set: a withdrawal that cannot be done. */
function refuseReaders(file: string): void {
  const db = new Database(join(dirname(file), "mailgator-state.db"));
  try {
    db.run(
      "CREATE TRIGGER refuse_readers BEFORE INSERT ON approval_link_readers " +
        "BEGIN SELECT RAISE(ABORT, 'readers refused'); END",
    );
  } finally {
    db.close();
  }
}

test("links that cannot be checked: serve does not start; a reload says so and is in part", async () => {
  const m = uniqueToken("lf");
  const boss = `boss-${m}@corp.test`;
  const admin = await freePort();
  const token = generateToken();
  const file = join(mkdtempSync(join(TMP, "mg-link-fail-")), "mailgator.toml");
  writeFileSync(file, configFor(admin, boss, token, false));
  const first = serveChild(file);
  try {
    await first.port("SMTP");
  } finally {
    first.proc.kill("SIGTERM");
  }
  await cleanExit(first);
  refuseReaders(file);

  // A start whose agents may read a mailbox more, with the set not recordable: it does not start.
  writeFileSync(file, configFor(admin, boss, token, true));
  const refused = serveChild(file);
  expect(await refused.proc.exited).toBe(1);
  expect(refused.logs()).toContain("cannot start: readers refused");

  // Started under the first config (nothing to record), then reloaded into the second: in part, and said so.
  writeFileSync(file, configFor(admin, boss, token, false));
  const served = serveChild(file);
  try {
    await served.port("SMTP");
    writeFileSync(file, configFor(admin, boss, token, true));
    const r = runCli(["reload", "-c", file]);
    expect(r.exitCode).toBe(1);
    expect(r.stdout + r.stderr).toContain("reloaded in part");
    expect(r.stdout + r.stderr).toContain("the approval links could not be checked against the new agents");
  } finally {
    served.proc.kill("SIGTERM");
  }
  await cleanExit(served);
});
