/**
 * Notices as `mailgator serve` sends them (docs/approvals.md "Notices"): a child process with a config file, an agent
 * sending through it with nodemailer, Postfix delivering. The approver's notice arrives with a link to the page on
 * the admin listener; the page approves; the sender gets the result. `mailgator approvals deny`, run beside serve,
 * sends the sender's notice itself.
 */

import { expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { join } from "node:path";
import nodemailer from "nodemailer";
import { userMaildir } from "../../scripts/upstreams/layout.ts";
import { freePort } from "../../scripts/upstreams/ports.ts";
import { MAX_FORM_BYTES } from "../../src/approvals/web.ts";
import { heldId, uniqueToken, upstreams } from "../fixtures/index.ts";
import { tempRoot } from "../fixtures/temp.ts";
import { sinkCopies } from "../smtp/helpers.ts";
import { noticesIn, waitFor } from "../smtp/notice-reader.ts";
import { accountToml, serveConfig } from "./config.ts";
import { cleanExit, serveChild, stopServed } from "./serve-child.ts";

/** Every folder this file makes is in here, removed after its tests. */
const TMP = tempRoot("mg-notices-");

setDefaultTimeout(60_000);

/** The one rule of these configs: every send is held for the group `managers`. */
const EVERY_SEND_ASKS = `
[[rules]]
name = "every send needs a manager"
action = "ask"
operations = ["send"]
ask_groups = ["managers"]
`;

const MAIN = join(import.meta.dir, "../../src/cli/main.ts");

/**
 * A nodemailer transport logged in as `sender` on the SMTP proxy at `port`, and `send(tag)`: a message from it to
 * `<tag>-<m>@outside.example`, which an ask rule holds; the held message's id.
 */
function outsideSender(port: number, sender: { user: string; password: string }, m: string) {
  const transport = nodemailer.createTransport({
    host: "127.0.0.1",
    port,
    secure: false,
    ignoreTLS: true,
    auth: { user: sender.user, pass: sender.password },
  });
  const send = async (tag: string) => {
    const info = await transport.sendMail({
      from: sender.user,
      to: `${tag}-${m}@outside.example`,
      subject: `${tag} ${m}`,
      text: `Hello ${tag} ${m}\n`,
    });
    return heldId(info.response);
  };
  return { transport, send };
}

/** A POST's request line and header alone, declaring `length` octets of body: what the listener answers, as text. */
function headerOnlyPost(port: number, path: string, length: number): Promise<string> {
  return new Promise((resolve) => {
    let text = "";
    const socket = connect(port, "127.0.0.1", () =>
      socket.write(
        `POST ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nOrigin: http://127.0.0.1:${port}\r\n` +
          `Content-Type: application/x-www-form-urlencoded\r\nContent-Length: ${length}\r\n\r\n`,
      ),
    );
    socket.on("data", (d) => {
      text += d.toString("latin1");
    });
    socket.on("error", () => {});
    socket.on("close", () => resolve(text));
    setTimeout(() => socket.destroy(), 10_000);
  });
}

test("serve notifies the approver; the link's page approves; the sender learns the results", async () => {
  const up = upstreams();
  const [alice, bob] = [up.users[0]!, up.users[1]!];
  const m = uniqueToken("n");
  const boss = `boss-${m}@corp.test`;
  const admin = await freePort();
  const dir = mkdtempSync(join(TMP, "mg-notices-"));
  const config = join(dir, "mailgator.toml");
  writeFileSync(
    config,
    serveConfig(
      { adminPort: admin, approvals: { notifyAccount: "notices", notifySender: true, managers: [boss] } },
      `\n${accountToml("notices", bob)}${EVERY_SEND_ASKS}`,
    ),
  );
  const proc = Bun.spawn([process.execPath, MAIN, "serve", "-c", config, "--log-format", "json"], {
    stdout: "pipe",
    stderr: "pipe",
  });
  let logs = "";
  void (async () => {
    const reader = (proc.stderr as ReadableStream<Uint8Array>).getReader();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      logs += new TextDecoder().decode(value);
    }
  })();
  try {
    let port = 0;
    for (let i = 0; i < 400 && port === 0; i++) {
      port = Number(/SMTP proxy listening on 127\.0\.0\.1:(\d+)/.exec(logs)?.[1] ?? 0);
      if (port === 0) await Bun.sleep(50);
    }
    expect(port).toBeGreaterThan(0);
    await waitFor("admin", () => (logs.includes("admin listening") ? [1] : []), 1);
    const { transport, send } = outsideSender(port, alice, m);

    const approved = await send("approved");
    const [notice] = await waitFor("notices", () => noticesIn(up.sink, approved), 1);
    expect(notice!.recipient).toBe(boss);
    expect(notice!.body).toContain(`To:          approved-${m}@outside.example  (OUTSIDE the sender's domain)`);
    const link = notice!.body
      .split("\n")
      .find((l) => l.startsWith(`http://127.0.0.1:${admin}/approvals/${approved}?t=`));
    expect(link).toBeDefined();
    const page = await fetch(link!);
    expect(page.status).toBe(200);
    expect(await page.text()).toContain(`approved ${m}`);
    const token = new URL(link!).searchParams.get("t")!;
    // The page's form is at most MAX_FORM_BYTES, and serve registers it so (src/admin/server.ts maxBodyBytes): a POST
    // declared one octet longer is refused before any of its body is sent, not waited for and kept ADMIN_BODY_MS.
    const t0 = performance.now();
    const oversized = await headerOnlyPost(admin, `/approvals/${approved}`, MAX_FORM_BYTES + 1);
    expect(oversized).toStartWith("HTTP/1.1 413 ");
    expect(oversized).toContain(`at most ${MAX_FORM_BYTES} octets`);
    expect(performance.now() - t0).toBeLessThan(1000);
    const post = await fetch(`http://127.0.0.1:${admin}/approvals/${approved}`, {
      method: "POST",
      body: `t=${encodeURIComponent(token)}&action=approve&confirm=approve`,
      headers: { "content-type": "application/x-www-form-urlencoded", origin: `http://127.0.0.1:${admin}` },
    });
    expect(post.status).toBe(200);
    await waitFor("copies", () => sinkCopies(`Hello approved ${m}`), 1);
    const inbox = userMaildir(up.maildirRoot, alice.user);
    const [sent] = await waitFor("sender notices", () => noticesIn(inbox, approved), 1);
    expect(sent!.body).toContain("was approved and sent");

    // The command line decides beside serve, and sends the sender's notice itself.
    const denied = await send("denied");
    await waitFor("notices", () => noticesIn(up.sink, denied), 1);
    // An operator sees that the approvers were told: `notified` once the upstream accepted every notice.
    const notified = () => {
      const listed = Bun.spawnSync([process.execPath, MAIN, "approvals", "list", "-c", config, "--json"]);
      const rows = JSON.parse(listed.stdout.toString()) as { id: string; notified: boolean }[];
      return rows.filter((r) => r.id === denied && r.notified);
    };
    await waitFor("notified", notified, 1);
    const cli = Bun.spawnSync([process.execPath, MAIN, "approvals", "deny", denied, "-c", config]);
    expect(cli.exitCode).toBe(0);
    const [gone] = await waitFor("sender notices", () => noticesIn(inbox, denied), 1);
    expect(gone!.body).toContain("was denied");
    transport.close();
  } finally {
    await stopServed({ proc, logs: () => logs });
  }
});

test("approvers changed by SIGHUP: the next held message's notice goes to the new ones", async () => {
  const up = upstreams();
  const [alice, bob] = [up.users[0]!, up.users[1]!];
  const m = uniqueToken("r");
  const dir = mkdtempSync(join(TMP, "mg-notices-reload-"));
  const file = join(dir, "mailgator.toml");
  const configFor = (boss: string) =>
    serveConfig(
      { approvals: { notifyAccount: "notices", managers: [boss] } },
      `\n${accountToml("notices", bob)}${EVERY_SEND_ASKS}`,
    );
  const [before, after] = [`before-${m}@corp.test`, `after-${m}@corp.test`];
  writeFileSync(file, configFor(before));
  const served = serveChild(file);
  try {
    const { transport, send } = outsideSender(await served.port("SMTP"), alice, m);
    const first = await send("first");
    const [one] = await waitFor("notices", () => noticesIn(up.sink, first), 1);
    expect(one!.recipient).toBe(before);

    writeFileSync(file, configFor(after));
    const mark = served.logs().length;
    process.kill(served.proc.pid, "SIGHUP");
    expect(await served.waitForLog(/reloaded |reload failed/, mark)).toMatch(/reloaded /);
    const second = await send("second");
    const [two] = await waitFor("notices", () => noticesIn(up.sink, second), 1);
    expect(two!.recipient).toBe(after);
    transport.close();
  } finally {
    served.proc.kill("SIGTERM");
  }
  await cleanExit(served);
});
