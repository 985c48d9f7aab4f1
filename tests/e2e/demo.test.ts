/**
 * `npm run demo` as a new user meets it: every command it prints works when pasted into a shell as printed, SIGTERM
 * or SIGINT to the demo's own process (not its process group), or SIGTERM to `npm run demo`'s, stops everything it
 * started, and a second run keeps the ports of the first (docs/upstreams.md "The demo").
 */
import { afterAll, expect, test } from "bun:test";
import { readdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { runRoot } from "../../scripts/upstreams/layout.ts";
import { isListening } from "../../scripts/upstreams/ports.ts";
import { commandLine } from "../../scripts/upstreams/processes.ts";

const ROOT = join(import.meta.dir, "../..");
const DIR = join(runRoot(), `demo-test-${process.pid}`);
afterAll(() => rmSync(DIR, { recursive: true, force: true }));

interface Demo {
  proc: ReturnType<typeof Bun.spawn>;
  output: () => string;
}

/** Starts the demo in a process group of its own, so that a signal reaches only the process it is sent to. */
async function startDemo(viaNpm = false): Promise<Demo> {
  const argv = viaNpm ? ["npm", "run", "demo"] : [process.execPath, join(ROOT, "scripts/demo.ts")];
  const proc = Bun.spawn(["setsid", ...argv], {
    cwd: ROOT,
    env: { ...process.env, MAILGATOR_DEMO_DIR: DIR },
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
  let text = "";
  for (const stream of [proc.stdout, proc.stderr] as ReadableStream<Uint8Array>[]) {
    void (async () => {
      const reader = stream.getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        text += new TextDecoder().decode(value);
      }
    })();
  }
  const deadline = Date.now() + 150_000;
  while (!text.includes("stops Mailgator, Dovecot and Postfix") && Date.now() < deadline && proc.exitCode === null)
    await Bun.sleep(200);
  if (!text.includes("stops Mailgator, Dovecot and Postfix")) {
    proc.kill("SIGKILL");
    throw new Error(`the demo did not come up:\n${text}`);
  }
  return { proc, output: () => text };
}

/** The commands the demo printed: the line after each "# title". */
function printedCommands(text: string): { title: string; command: string }[] {
  const lines = text.split("\n");
  const found: { title: string; command: string }[] = [];
  lines.forEach((line, i) => {
    if (line.startsWith("# ") && lines[i + 1]) found.push({ title: line.slice(2), command: lines[i + 1]! });
  });
  return found;
}

function ports(): Record<string, number> {
  return JSON.parse(readFileSync(join(DIR, "ports.json"), "utf8")) as Record<string, number>;
}

/** Signals the demo's own pid and checks that nothing it started is left: no process naming its folder, no port. */
async function stopWith(demo: Demo, signal: "SIGTERM" | "SIGINT"): Promise<void> {
  const used = Object.values(ports());
  demo.proc.kill(signal);
  const code = await Promise.race([demo.proc.exited, Bun.sleep(60_000).then(() => "timeout" as const)]);
  expect(code).not.toBe("timeout");
  const deadline = Date.now() + 60_000;
  while (!demo.output().includes("demo: stopped everything it started.") && Date.now() < deadline) await Bun.sleep(200);
  expect(demo.output()).toContain("demo: stopped everything it started.");
  const left = () =>
    readdirSync("/proc")
      .filter((p) => /^\d+$/.test(p) && Number(p) !== process.pid)
      .map((p) => commandLine(Number(p)))
      .filter((c) => c.includes(DIR));
  while (left().length > 0 && Date.now() < deadline) await Bun.sleep(200);
  expect(left()).toEqual([]);
  for (const port of used) expect([port, await isListening(port)]).toEqual([port, false]);
}

const TITLE = "printed commands work as pasted; SIGTERM stops all; next run keeps the ports; SIGINT and npm run too";
test(TITLE, async () => {
  const first = await startDemo();
  const remembered = ports();
  try {
    const commands = printedCommands(first.output());
    expect(commands.map((c) => c.command.split(" ")[0])).toEqual([
      "curl",
      "curl",
      "curl",
      "curl",
      "swaks",
      "swaks",
      "npx",
    ]);
    const results = commands.map(({ title, command }) => {
      const run = Bun.spawnSync(["sh", "-c", command], { cwd: ROOT, stdout: "pipe", stderr: "pipe", timeout: 60_000 });
      return { title, command, code: run.exitCode, out: `${run.stdout.toString()}${run.stderr.toString()}` };
    });
    const [read, hidden, search, folders, sent, refused, audit] = results;
    // The allowed read fetches that one message: the shell must not cut the URL at its ";".
    expect(read!.code).toBe(0);
    expect(read!.out).toMatch(/^From: .*notifications@/m);
    expect(hidden!.code).not.toBe(0); // the message does not exist for the agent
    expect(hidden!.out).not.toMatch(/^From: /m);
    expect(search!.code).toBe(0);
    expect(search!.out).toMatch(/^\* SEARCH( \d+)+/m);
    expect(folders!.code).toBe(0);
    expect(folders!.out).toContain("INBOX");
    expect(folders!.out).not.toContain("Archive");
    expect(sent!.code).toBe(0);
    expect(sent!.out).toContain("250");
    expect(refused!.code).not.toBe(0);
    expect(refused!.out).toContain("550 5.7.1");
    expect(audit!.code).toBe(0);
    expect(audit!.out).toContain("RCPT TO");
    expect(audit!.out).toContain("DENY");
  } finally {
    await stopWith(first, "SIGTERM");
  }
  const second = await startDemo();
  try {
    expect(ports()).toEqual(remembered);
    expect(second.output()).toContain(`IMAP 127.0.0.1:${remembered["imap"]} and SMTP 127.0.0.1:${remembered["smtp"]}`);
  } finally {
    await stopWith(second, "SIGINT");
  }
  // `npm run demo` is what people run: SIGTERM to npm's process stops the demo too.
  const third = await startDemo(true);
  await stopWith(third, "SIGTERM");
}, 600_000);
