/**
 * `npm run demo`: real Dovecot and Postfix on loopback, a seeded demo mailbox, a demo config
 * with seed-style rules, and Mailgator in front; prints commands that show an allowed read, a
 * hidden message and a refused send. Ctrl-C stops everything it started.
 *
 *   npx bun scripts/demo.ts [--smoke]   (--smoke: run the printed commands, show their output, stop)
 *
 * Ports are remembered in `<demo dir>/ports.json` and reused when free, so a mail client set up against the demo
 * keeps working across runs. MAILGATOR_DEMO_DIR moves the demo folder (the tests use their own).
 */
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { join, resolve } from "node:path";
import type { Upstreams } from "./upstreams/description.ts";
import { runRoot } from "./upstreams/layout.ts";
import { freePort, isListening } from "./upstreams/ports.ts";
import type { SeedManifest } from "./upstreams/seed.ts";
import { seedMaildir } from "./upstreams/seed.ts";
import { startUpstreams } from "./upstreams/start.ts";
import { stopUpstreams } from "./upstreams/stop.ts";
import { addUser } from "./upstreams/users.ts";

const ROOT = resolve(import.meta.dir, "..");
const DEMO_DIR = process.env["MAILGATOR_DEMO_DIR"] || join(runRoot(), "demo");
const PORTS_FILE = join(DEMO_DIR, "ports.json");
const UPSTREAMS_DIR = join(DEMO_DIR, "upstreams");
const CONFIG = join(DEMO_DIR, "mailgator.toml");
const USER = "demo@mailgator.test";
const PASSWORD = "demo-password";
const smoke = process.argv.includes("--smoke");
const say = (line = "") => console.log(line);

/** How often the demo checks that whoever started it is still there. */
const PARENT_POLL_MS = 500;

/** Ctrl-C (or SIGTERM) at any point: finish the current step, then clean up. */
let stopping = false;
const stopRequested = new Promise<void>((resolveStop) => {
  const stop = () => {
    stopping = true;
    resolveStop();
  };
  process.on("SIGINT", stop);
  process.on("SIGTERM", stop);
  // `npm run demo` killed (its SIGTERM, or kill -9): this process is reparented, and stops like on a signal.
  const parent = process.ppid;
  setInterval(() => {
    if (process.ppid !== parent) stop();
  }, PARENT_POLL_MS).unref();
});

function demoConfig(servers: Upstreams, ports: { imap: number; smtp: number }): string {
  return `# Written by scripts/demo.ts (npm run demo). Every key is described in docs/config.md.
[imap]
listen_addr = "127.0.0.1:${ports.imap}"
upstream_addr = "127.0.0.1:${servers.ports.imaps}"
upstream_tls = "tls"
upstream_ca_file = ${JSON.stringify(servers.caFile)}

[smtp]
listen_addr = "127.0.0.1:${ports.smtp}"
upstream_addr = "127.0.0.1:${servers.ports.smtps}"
upstream_tls = "tls"
upstream_ca_file = ${JSON.stringify(servers.caFile)}

[audit]
path = ${JSON.stringify(join(DEMO_DIR, "audit.db"))}

[[rules]]
name = "Transactional emails from known senders"
folders = ["INBOX"]
from = "notifications@*"
action = "allow"
operations = ["read"]

[[rules]]
name = "Send to colleagues"
to = "*@corp.test"
action = "allow"
operations = ["send"]

[[rules]]
name = "Deny everything else"
action = "deny"
`;
}

type PortName = "imap" | "smtp" | "upstreamImap" | "upstreamImaps" | "upstreamSmtp" | "upstreamSmtps";
const PORT_NAMES: readonly PortName[] = [
  "imap",
  "smtp",
  "upstreamImap",
  "upstreamImaps",
  "upstreamSmtp",
  "upstreamSmtps",
];

/** True when 127.0.0.1:port can be bound right now. */
function canBind(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once("error", () => resolve(false));
    server.listen({ host: "127.0.0.1", port, exclusive: true }, () => server.close(() => resolve(true)));
  });
}

/** The ports of the last run where still free, fresh ones for the rest; remembered for the next run. */
async function demoPorts(): Promise<Record<PortName, number>> {
  let last: Partial<Record<PortName, number>> = {};
  try {
    last = JSON.parse(readFileSync(PORTS_FILE, "utf8")) as Partial<Record<PortName, number>>;
  } catch {
    // first run, or an unreadable file: fresh ports
  }
  const chosen = {} as Record<PortName, number>;
  const taken = new Set<number>();
  for (const name of PORT_NAMES) {
    const previous = last[name];
    let port =
      Number.isInteger(previous) && previous! > 1023 && previous! < 65536 && !taken.has(previous!) ? previous! : 0;
    if (port === 0 || !(await canBind(port))) {
      do port = await freePort();
      while (taken.has(port));
    }
    taken.add(port);
    chosen[name] = port;
  }
  writeFileSync(PORTS_FILE, `${JSON.stringify(chosen, null, 2)}\n`);
  return chosen;
}

/** Fresh demo mailbox every run: same seed, so the same UIDs and the same commands. */
function seedDemo(servers: Upstreams): SeedManifest {
  const user = addUser(servers, USER, PASSWORD);
  rmSync(user.maildir, { recursive: true, force: true });
  addUser(servers, USER, PASSWORD);
  return seedMaildir(user.maildir, {
    folders: { INBOX: 200, "Archive/2025": 50, Sent: 30, Drafts: 10, Trash: 10 },
    seed: 2026,
    owner: USER,
  });
}

/** Which of the ports Mailgator opened: waits up to `timeoutMs`, then 1.5 s more after the first opens. */
async function waitForListeners(
  ports: readonly number[],
  timeoutMs: number,
  child: { exitCode: number | null },
): Promise<boolean[]> {
  let deadline = Date.now() + timeoutMs;
  const up = ports.map(() => false);
  while (Date.now() < deadline && child.exitCode === null && !stopping) {
    for (const [index, port] of ports.entries()) {
      if (up[index] || !(await isListening(port))) continue;
      if (!up.some(Boolean)) deadline = Math.min(deadline, Date.now() + 1500);
      up[index] = true;
    }
    if (up.every(Boolean)) break;
    await Bun.sleep(100);
  }
  return up;
}

/** An argument as a POSIX shell reads it back unchanged: bare when only safe characters, else in single quotes. */
function shellQuote(arg: string): string {
  return /^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, "'\\''")}'`;
}

function run(argv: string[]): string {
  const result = Bun.spawnSync(argv, { cwd: ROOT, stdin: "ignore", stdout: "pipe", stderr: "pipe", timeout: 20_000 });
  return `${result.stdout.toString()}${result.stderr.toString()}`.trim() + `\n(exit ${result.exitCode})`;
}

async function main(): Promise<number> {
  mkdirSync(DEMO_DIR, { recursive: true });
  // A demo killed without Ctrl-C may have left its servers running: end them first.
  await stopUpstreams({ dir: UPSTREAMS_DIR });
  rmSync(join(UPSTREAMS_DIR, "mail"), { recursive: true, force: true });
  const chosen = await demoPorts();
  say("demo: starting Dovecot and Postfix on 127.0.0.1 (installs them first if missing) ...");
  const servers = await startUpstreams({
    dir: UPSTREAMS_DIR,
    log: (line) => console.error(line),
    ports: {
      imap: chosen.upstreamImap,
      imaps: chosen.upstreamImaps,
      smtp: chosen.upstreamSmtp,
      smtps: chosen.upstreamSmtps,
    },
  });
  if (stopping) {
    await stopUpstreams({ dir: UPSTREAMS_DIR });
    return 0;
  }
  let mailgator: ReturnType<typeof Bun.spawn> | undefined;
  const cleanup = async () => {
    if (mailgator !== undefined && mailgator.exitCode === null) {
      mailgator.kill("SIGTERM");
      await Promise.race([mailgator.exited, Bun.sleep(5000)]);
      if (mailgator.exitCode === null) mailgator.kill("SIGKILL");
    }
    await stopUpstreams({ dir: UPSTREAMS_DIR });
  };
  try {
    const manifest = seedDemo(servers);
    const inbox = manifest.folders["INBOX"] ?? [];
    const total = Object.values(manifest.folders).reduce((sum, list) => sum + list.length, 0);
    const ports = { imap: chosen.imap, smtp: chosen.smtp };
    writeFileSync(CONFIG, demoConfig(servers, ports));
    say(`demo: seeded ${total} messages for ${USER} (INBOX ${inbox.length}); config in ${CONFIG}`);

    const cli = join(ROOT, "src", "cli", "main.ts");
    if (!existsSync(cli)) {
      say(`demo: ${cli} does not exist yet: Mailgator cannot start. The upstream servers worked; stopping them.`);
      return 1;
    }
    mailgator = Bun.spawn([process.execPath, cli, "serve", "-c", CONFIG], {
      cwd: ROOT,
      stdin: "ignore",
      stdout: "inherit",
      stderr: "inherit",
    });
    const child = mailgator;
    const [imapUp, smtpUp] = await waitForListeners([ports.imap, ports.smtp], 15_000, child);
    if (stopping) return 0;
    if (!imapUp && !smtpUp) {
      const code = child.exitCode ?? (child.kill("SIGTERM"), await child.exited);
      say(
        `\ndemo: Mailgator did not open its listeners (bun src/cli/main.ts serve -c ${CONFIG} ` +
          `${child.exitCode === null ? "kept running" : `exited with ${code}`}); ` +
          "see its messages above. Stopping the upstream servers.",
      );
      return 1;
    }

    const allowed = inbox.find((m) => m.from.startsWith("notifications@"));
    const trick = inbox.find((m) => m.fromHeader.startsWith('"notifications@'));
    const boss = inbox.find((m) => m.from === "boss@corp.test");
    const visible = inbox.filter((m) => m.from.startsWith("notifications@")).length;
    const curl = (what: string) => [
      "curl",
      "-sS",
      `imap://127.0.0.1:${ports.imap}/${what}`,
      "-u",
      `${USER}:${PASSWORD}`,
    ];
    const examples: { title: string; argv: string[] }[] = [];
    if (imapUp) {
      examples.push(
        {
          title: `Allowed read: UID ${allowed?.uid} is from ${allowed?.from} in INBOX`,
          argv: curl(`INBOX;UID=${allowed?.uid}`),
        },
        {
          title:
            `Hidden: UID ${boss?.uid} is from boss@corp.test, ` +
            `UID ${trick?.uid} is spam@evil.test posing as "notifications@shop.test"; neither exists for the agent`,
          argv: curl(`INBOX;UID=${boss?.uid}`),
        },
        {
          title: `The agent's view of INBOX: ${visible} of ${inbox.length} messages (only notifications@*)`,
          argv: [...curl("INBOX"), "-X", "UID SEARCH ALL"],
        },
        { title: "Folders: only INBOX can be read", argv: curl("") },
      );
    } else say(`demo: the IMAP proxy is not listening on 127.0.0.1:${ports.imap} (not in this build yet?)`);
    const swaks = (to: string) => [
      "swaks",
      "--server",
      `127.0.0.1:${ports.smtp}`,
      "--auth",
      "PLAIN",
      "--auth-user",
      USER,
      "--auth-password",
      PASSWORD,
      "--from",
      USER,
      "--to",
      to,
      "--h-Subject",
      "hello from the demo",
    ];
    if (smtpUp) {
      examples.push(
        { title: 'Allowed send: boss@corp.test matches "*@corp.test"', argv: swaks("boss@corp.test") },
        {
          title: "Refused send: spam@evil.test matches no allow rule (550 5.7.1, never reaches Postfix)",
          argv: swaks("spam@evil.test"),
        },
      );
    } else say(`demo: the SMTP proxy is not listening on 127.0.0.1:${ports.smtp} (not in this build yet?)`);
    examples.push({
      title: "Every decision, from the audit log",
      argv: ["npx", "bun", "src/cli/main.ts", "audit", "-c", CONFIG],
    });

    say(
      `\nMailgator is in front of Dovecot (127.0.0.1:${servers.ports.imaps}) ` +
        `and Postfix (127.0.0.1:${servers.ports.smtps}).`,
    );
    say(`Agents connect to IMAP 127.0.0.1:${ports.imap} and SMTP 127.0.0.1:${ports.smtp} as ${USER} / ${PASSWORD}.\n`);
    // Each title with its command (and in a smoke run its output) in one write, and without a smoke run all of them
    // in one: Mailgator's log lines share the terminal (the access lines of the listener probes above come a moment
    // later), and none must come between a title and its command.
    const blocks: string[] = [];
    for (const example of examples) {
      const block = [`# ${example.title}`, example.argv.map(shellQuote).join(" ")];
      if (smoke)
        block.push(
          run(example.argv)
            .split("\n")
            .map((line) => `    ${line}`)
            .join("\n"),
        );
      if (smoke) say(`${block.join("\n")}\n`);
      else blocks.push(`${block.join("\n")}\n`);
    }
    if (blocks.length > 0) say(blocks.join("\n"));
    say(`Run them from ${ROOT} (the audit command uses its node_modules).`);
    say(`Sent mail lands in ${servers.sink} (one file per recipient). Config: ${CONFIG}`);
    if (smoke) return 0;
    say(`Ctrl-C (or kill ${process.pid}) stops Mailgator, Dovecot and Postfix.`);
    const exited = child.exited.then(() => {
      if (!stopping) say(`\ndemo: Mailgator exited (code ${child.exitCode}); stopping the upstream servers.`);
    });
    await Promise.race([stopRequested, exited]);
    return stopping ? 0 : 1;
  } finally {
    await cleanup();
    say("demo: stopped everything it started.");
  }
}

process.exit(
  await main().catch((error: unknown) => {
    console.error(`demo: ${error instanceof Error ? error.message : String(error)}`);
    return 1;
  }),
);
