/**
 * `mailgator serve` as a user runs it: a child process with a config file,
 * sending real mail through it to the test Postfix, stopped with SIGTERM.
 */
import { expect, setDefaultTimeout, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import nodemailer from "nodemailer";
import { ALLOCATOR_ENV } from "../../src/cli/allocator.ts";
import { END_GRACE_MS } from "../../src/net/connection.ts";
import { cleanExit, stopServed } from "../e2e/serve-child.ts";
import { proxyListeners, sinkRecipients, smtpListener, uniqueToken, upstreams } from "../fixtures/index.ts";
import { tempRoot } from "../fixtures/temp.ts";

/** Every folder this file makes is in here, removed after its tests. */
const TMP = tempRoot("mg-serve-");

setDefaultTimeout(30_000);
const MAIN = join(import.meta.dir, "../../src/cli/main.ts");

interface Served {
  proc: ReturnType<typeof Bun.spawn>;
  logs: () => string;
  port: (name: "SMTP" | "IMAP") => Promise<number>;
}

/** Runs serve with the test's environment minus any allocator setting (serve must add its own), plus `env`. */
function serve(config: string, env: Record<string, string> = {}): Served {
  const inherited: Record<string, string | undefined> = { ...process.env };
  for (const name of Object.keys(ALLOCATOR_ENV)) delete inherited[name];
  const proc = Bun.spawn([process.execPath, MAIN, "serve", "-c", config, "--log-format", "json"], {
    stderr: "pipe",
    stdout: "pipe",
    env: { ...inherited, ...env },
  });
  let text = "";
  const reader = (proc.stderr as ReadableStream<Uint8Array>).getReader();
  const pump = (async () => {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      text += new TextDecoder().decode(value);
    }
  })();
  void pump;
  return {
    proc,
    logs: () => text,
    async port(name) {
      const re = new RegExp(`${name} proxy listening on 127\\.0\\.0\\.1:(\\d+)`);
      for (let i = 0; i < 200; i++) {
        const m = re.exec(text);
        if (m) return Number(m[1]);
        if (proc.exitCode !== null) break;
        await Bun.sleep(50);
      }
      throw new Error(`serve did not report the ${name} port:\n${text}`);
    },
  };
}

/** What serve sets: every variable of ALLOCATOR_ENV, as /proc shows them (sorted). */
const TUNED = Object.entries(ALLOCATOR_ENV)
  .map(([k, v]) => `${k}=${v}`)
  .sort();

/** The allocator variables of a running process, from /proc (src/cli/allocator.ts). */
function allocatorEnv(pid: number): string[] {
  return readFileSync(`/proc/${pid}/environ`, "utf8")
    .split("\0")
    .filter((kv) => kv.startsWith("MIMALLOC_"))
    .sort();
}

/** A config with just the SMTP proxy: sends to *@corp.test allowed, the rest denied; me@corp.test is an identity. */
function smtpConfig(): string {
  const dir = mkdtempSync(join(TMP, "mg-serve-"));
  const config = join(dir, "mailgator.toml");
  writeFileSync(
    config,
    `${smtpListener()}identities = ["me@corp.test"]

[[rules]]
name = "Colleagues"
to = "*@corp.test"
operations = ["send"]
action = "allow"

[[rules]]
name = "Deny everything else"
action = "deny"
`,
  );
  return config;
}

test("serve runs the SMTP proxy from a config file, audits, and stops cleanly on SIGTERM", async () => {
  const up = upstreams();
  const config = smtpConfig();
  const served = serve(config);
  try {
    const port = await served.port("SMTP");
    // serve re-executed itself (same PID) with the allocator tuned.
    expect(allocatorEnv(served.proc.pid)).toEqual(TUNED);
    const token = uniqueToken("serve");
    const login = up.users[0]!; // pass-through: the client logs in with upstream credentials
    const transport = nodemailer.createTransport({
      host: "127.0.0.1",
      port,
      secure: false,
      ignoreTLS: true,
      auth: { user: login.user, pass: login.password },
    });
    await transport.sendMail({ from: "me@corp.test", to: `${token}@corp.test`, subject: token, text: "hello" });
    const refused = await transport
      .sendMail({ from: "me@corp.test", to: `${token}-x@evil.test`, subject: token, text: "nope" })
      .catch((e: Error) => e);
    expect(String(refused)).toContain("5.7.1");
    // Only the login and [smtp] identities may be the sender (the rules alone would allow this one).
    const foreign = await transport
      .sendMail({ from: "boss@corp.test", to: `${token}-f@corp.test`, subject: token, text: "as someone else" })
      .catch((e: Error) => e);
    expect(String(foreign)).toContain("553 5.7.1");
    transport.close();
    expect(await sinkRecipients(token)).toEqual([`${token}@corp.test`]);
  } finally {
    served.proc.kill("SIGTERM");
  }
  await cleanExit(served);
  expect(served.logs()).toContain("SIGTERM: shutting down");

  const audit = Bun.spawnSync([process.execPath, MAIN, "audit", "-c", config, "--json", "--limit", "1000"]);
  const rows = audit.stdout
    .toString()
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l));
  expect(
    rows.some((r) => r.decision === "allow" && r.rule === "Colleagues" && String(r.target).includes("@corp.test")),
  ).toBe(true);
  expect(
    rows.some(
      (r) => r.decision === "deny" && r.rule === "Deny everything else" && String(r.target).includes("evil.test"),
    ),
  ).toBe(true);
  expect(
    rows.some(
      (r) =>
        r.decision === "deny" &&
        r.rule === null &&
        r.target === "boss@corp.test" &&
        String(r.reason).includes("not one of this account's identities"),
    ),
  ).toBe(true);
});

test("serve leaves an allocator setting the operator made alone", async () => {
  const served = serve(smtpConfig(), { MIMALLOC_PURGE_DELAY: "10" });
  try {
    await served.port("SMTP");
    // The one the operator set is kept; the other is added.
    expect(allocatorEnv(served.proc.pid)).toEqual(["MIMALLOC_PURGE_DELAY=10", "MIMALLOC_PURGE_HOLES=0"]);
  } finally {
    served.proc.kill("SIGTERM");
  }
  await cleanExit(served);
});

test("serve under bun passes BUN_OPTIONS' flags once when it re-executes itself: in its arguments", async () => {
  const served = serve(smtpConfig(), { BUN_OPTIONS: "--smol" });
  try {
    await served.port("SMTP");
    // Bun reads BUN_OPTIONS into execArgv: kept in the environment as well, every flag would be given twice.
    const cmdline = readFileSync(`/proc/${served.proc.pid}/cmdline`, "utf8").split("\0");
    expect(cmdline.filter((a) => a === "--smol")).toEqual(["--smol"]);
    const environ = readFileSync(`/proc/${served.proc.pid}/environ`, "utf8").split("\0");
    expect(environ.filter((kv) => kv.startsWith("BUN_OPTIONS="))).toEqual([]);
    expect(allocatorEnv(served.proc.pid)).toEqual(TUNED);
  } finally {
    served.proc.kill("SIGTERM");
  }
  await cleanExit(served);
});

test("serve with a config the validator refuses: exit 2, each problem at file:line:col, nothing listens", async () => {
  const dir = mkdtempSync(join(TMP, "mg-serve-"));
  const config = join(dir, "mailgator.toml");
  writeFileSync(
    config,
    `${proxyListeners()}
[[rules]]
name = "Flag the boss's mail"
folders = ["INBOX"]
from = "boss@corp.test"
action = "allow"
operations = ["read", "mail:flag"]

[[rules]]
name = "Hold outgoing mail"
action = "ask"
operations = ["send"]
`,
  );
  const p = Bun.spawn([process.execPath, MAIN, "serve", "-c", config, "--log-format", "json"], {
    stdout: "pipe",
    stderr: "pipe",
  });
  const [code, stdout, stderr] = await Promise.all([
    p.exited,
    new Response(p.stdout).text(),
    new Response(p.stderr).text(),
  ]);
  expect(code).toBe(2);
  // --log-format json: one JSON line per problem (docs/operations.md "Logs").
  const messages = stderr
    .trimEnd()
    .split("\n")
    .map((l) => String((JSON.parse(l) as { msg: string }).msg));
  expect(messages).toHaveLength(2);
  expect(messages[0]).toContain(
    `${config}:18:14: rules[0].operations: message conditions (from) apply only to reading ("read", "folder:read", ` +
      `"mail:read") and sending ("send"), but this rule also covers mail:flag`,
  );
  expect(messages[1]).toContain(`${config}:22:10: rules[1].action: action "ask" needs ask_groups`);
  expect(`${stdout}${stderr}`).not.toContain("listening");
  // Refused before anything was opened: not even the audit log.
  expect(existsSync(join(dir, "mailgator-audit.db"))).toBe(false);
});

test("SIGTERM ends serve even when an agent never hangs up (connections destroyed after the grace time)", async () => {
  const up = upstreams();
  const dir = mkdtempSync(join(TMP, "mg-serve-"));
  const config = join(dir, "mailgator.toml");
  writeFileSync(
    config,
    `[smtp]\nlisten_addr = "127.0.0.1:0"\nupstream_addr = "${up.host}:${up.ports.smtp}"\n` +
      `upstream_tls = "starttls"\nupstream_ca_file = "${up.caFile}"\n[[rules]]\nname = "none"\naction = "deny"\n`,
  );
  const served = serve(config);
  const port = await served.port("SMTP");
  const { connect } = await import("node:net");
  // Never closes its side: half-open, so the proxy's FIN does not make the runtime close it for us. Its greeting
  // read first: the session certainly exists before the SIGTERM.
  const stubborn = connect({ host: "127.0.0.1", port, allowHalfOpen: true });
  stubborn.on("error", () => {});
  await new Promise<void>((resolve) => stubborn.once("data", () => resolve()));
  const started = Date.now();
  await stopServed(served);
  // The agent's connection was held for the end grace (it never closed), then destroyed.
  const took = Date.now() - started;
  expect(took).toBeGreaterThanOrEqual(END_GRACE_MS - 100);
  expect(took).toBeLessThan(20_000);
  stubborn.destroy();
});
