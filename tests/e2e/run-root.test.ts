// Checkouts the daemons cannot reach (a clone under /root, which is 0700): the runtime folders move to a run root
// under /var/tmp, and Dovecot and Postfix started there really serve (docs/upstreams.md "Where the runtime folders
// live"). Before, Postfix failed at once with "open lock file .../master.lock: Permission denied".
import { afterAll, describe, expect, test } from "bun:test";
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ImapFlow } from "imapflow";
import nodemailer from "nodemailer";
import { CHECKOUT, reachableByOthers, runRoot } from "../../scripts/upstreams/layout.ts";
import { startUpstreams } from "../../scripts/upstreams/start.ts";
import { stopUpstreams } from "../../scripts/upstreams/stop.ts";

const scratch = mkdtempSync(join(tmpdir(), "mailgator-runroot-")); // mkdtemp makes it 0700, like /root
const checkout = join(scratch, "mailgator");
mkdirSync(checkout);
const made: string[] = [];
afterAll(() => {
  rmSync(scratch, { recursive: true, force: true });
  for (const dir of made) rmSync(dir, { recursive: true, force: true });
});

describe("run root", () => {
  test("a checkout others can reach keeps .run/ inside it", () => {
    if (reachableByOthers(CHECKOUT)) expect(runRoot()).toBe(join(CHECKOUT, ".run"));
    const open = mkdtempSync(join(tmpdir(), "mailgator-open-"));
    made.push(open);
    expect(reachableByOthers(join(open, "x", ".run"))).toBe(false); // 0700 from mkdtemp
    chmodSync(open, 0o755);
    expect(runRoot(join(open, "x"))).toBe(join(open, "x", ".run"));
  });

  test("a checkout under a 0700 folder gets /var/tmp/mailgator-<hash>, 0755, the same each time", () => {
    expect(reachableByOthers(checkout)).toBe(false);
    const root = runRoot(checkout);
    made.push(root);
    expect(root).toMatch(/^\/var\/tmp\/mailgator-[0-9a-f]{12}$/);
    expect(runRoot(checkout)).toBe(root);
    expect(statSync(root).mode & 0o777).toBe(0o755);
    expect(reachableByOthers(root)).toBe(true);
  });

  test("a fallback that is a symlink (someone else's, in a world-writable folder) is refused", () => {
    const parent = mkdtempSync(join(tmpdir(), "mailgator-parent-"));
    made.push(parent);
    const first = runRoot(checkout, parent);
    rmSync(first, { recursive: true });
    symlinkSync(scratch, first);
    expect(() => runRoot(checkout, parent)).toThrow("is not a directory owned by this user");
  });

  test("Dovecot and Postfix start in it and deliver: login, send, the message arrives", async () => {
    const dir = join(runRoot(checkout), "upstreams");
    const up = await startUpstreams({ dir, install: false, log: () => {} });
    try {
      expect(up.dir).toBe(dir);
      const alice = up.users.find((u) => u.address.startsWith("alice@"))!;
      const ca = readFileSync(up.caFile);
      const subject = `run-root ${Date.now()}`;
      const transport = nodemailer.createTransport({
        host: up.host,
        port: up.ports.smtps,
        secure: true,
        tls: { ca, servername: up.tlsName },
        auth: { user: alice.user, pass: alice.password },
      });
      await transport.sendMail({ from: alice.address, to: alice.address, subject, text: "hello\r\n" });
      transport.close();
      const inbox = join(alice.maildir, "new");
      const deadline = Date.now() + 20_000;
      let arrived = false;
      while (!arrived && Date.now() < deadline) {
        arrived = readdirSync(inbox).some((f) => readFileSync(join(inbox, f), "latin1").includes(subject));
        if (!arrived) await Bun.sleep(200);
      }
      expect(arrived).toBe(true);
      const client = new ImapFlow({
        host: up.host,
        port: up.ports.imaps,
        secure: true,
        tls: { ca, servername: up.tlsName },
        auth: { user: alice.user, pass: alice.password },
        logger: false,
      });
      await client.connect();
      const status = await client.status("INBOX", { messages: true });
      expect(status === false ? 0 : (status.messages ?? 0)).toBeGreaterThanOrEqual(1);
      await client.logout();
    } finally {
      const report = await stopUpstreams({ dir });
      expect(report.leftoverProcesses).toEqual([]);
      expect(report.leftoverPorts).toEqual([]);
    }
  }, 120_000);
});
