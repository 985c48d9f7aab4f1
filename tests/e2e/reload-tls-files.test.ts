/**
 * A reload whose config names a FIFO or a device as a TLS file (docs/config.md "[imap] and [smtp]", docs/operations.md
 * "Reload"): `mailgator serve` as a child process with a TLS listener and a session open through it, against the test
 * Dovecot. Each file is read as src/net/tls-file.ts reads it: a FIFO with no writer is refused at once rather than
 * waited on (the read is synchronous, so waiting stopped the whole process: every session, every later reload), and
 * /dev/zero is refused rather than read until memory runs out. The running config stays in force and the session
 * goes on; `mailgator check` of the same file answers at once too.
 */
import { afterAll, expect, setDefaultTimeout, test } from "bun:test";
import { execFileSync } from "node:child_process";
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connectImap, createMailbox, upstreams } from "../fixtures/index.ts";
import { serveChild } from "./serve-child.ts";

setDefaultTimeout(60_000);

const MAIN = join(import.meta.dir, "../../src/cli/main.ts");

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

interface Files {
  readonly ca: string;
  readonly cert: string;
  readonly key: string;
}

function config(dir: string, files: Files): string {
  const up = upstreams();
  return `[imap]
listen_addr = "127.0.0.1:0"
listen_tls = "tls"
tls_cert_file = "${files.cert}"
tls_key_file = "${files.key}"
upstream_addr = "${up.host}:${up.ports.imaps}"
upstream_tls = "tls"
upstream_ca_file = "${files.ca}"

[audit]
path = "${join(dir, "audit.db")}"

[[rules]]
name = "Everything"
action = "allow"
`;
}

/** A promise that fails after `ms`: a proxy that waits on a FIFO never answers. */
function within<T>(ms: number, what: string, promise: Promise<T>): Promise<T> {
  return Promise.race([
    promise,
    Bun.sleep(ms).then(() => {
      throw new Error(`${what}: no answer within ${ms} ms`);
    }),
  ]);
}

test("a FIFO or a device as a TLS file: the reload fails at once, the session goes on", async () => {
  const mailbox = await createMailbox({ name: "reload-tls-files" });
  const dir = mkdtempSync(join(tmpdir(), "mg-reload-tls-files-"));
  dirs.push(dir);
  const tls = join(upstreams().caFile, "..");
  const good: Files = { ca: upstreams().caFile, cert: join(tls, "server.pem"), key: join(dir, "server.key") };
  copyFileSync(join(tls, "server.key"), good.key);
  const fifo = join(dir, "tls.fifo");
  execFileSync("mkfifo", ["-m", "600", fifo]);
  const file = join(dir, "mailgator.toml");
  writeFileSync(file, config(dir, good));
  const served = serveChild(file);
  try {
    const port = await served.port("IMAP");
    const client = await connectImap(mailbox, { port, security: "imaps" });
    await client.mailboxOpen("INBOX");
    const bad: [string, Files, string][] = [
      ["upstream_ca_file", { ...good, ca: fifo }, "(a pipe)"],
      ["tls_cert_file", { ...good, cert: fifo }, "(a pipe)"],
      ["tls_key_file", { ...good, key: fifo }, "(a pipe)"],
      ["upstream_ca_file", { ...good, ca: "/dev/zero" }, "(a character device)"],
      ["tls_key_file", { ...good, key: "/dev/zero" }, "(a character device)"],
    ];
    for (const [key, files, kind] of bad) {
      writeFileSync(file, config(dir, files));
      const from = served.logs().length;
      served.proc.kill("SIGHUP");
      const failed = await served.waitForLog(/reload failed, the running config stays in force/, from);
      expect(failed).toContain(`imap.${key}:`);
      expect(failed).toContain(`is not a regular file ${kind}`);
      // The session was not stopped while the file was read: it answers, under the running config.
      await within(5_000, `NOOP after the reload with ${key} = ${kind}`, client.noop());
      const check = Bun.spawnSync([process.execPath, MAIN, "check", "-c", file], {
        env: { PATH: process.env["PATH"] ?? "" },
        timeout: 15_000,
      });
      expect(check.exitCode).toBe(2);
      expect(check.stderr.toString()).toContain(`is not a regular file ${kind}`);
    }
    // The good files again: reloaded, and a new TLS client logs in through them.
    writeFileSync(file, config(dir, good));
    const from = served.logs().length;
    served.proc.kill("SIGHUP");
    expect(await served.waitForLog(/reloaded .*config revision/, from)).toContain("reloaded");
    const second = await connectImap(mailbox, { port, security: "imaps" });
    expect((await second.mailboxOpen("INBOX")).path).toBe("INBOX");
    await second.logout();
    await client.logout();
  } finally {
    served.proc.kill("SIGTERM");
    // A process that waits in open(2) of a FIFO never runs its SIGTERM handler: killed after 10 s.
    if ((await Promise.race([served.proc.exited, Bun.sleep(10_000).then(() => null)])) === null) {
      served.proc.kill("SIGKILL");
      await served.proc.exited;
    }
  }
});
