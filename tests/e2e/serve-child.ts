/** `mailgator serve` as a child process, and a line-oriented socket client, for the reload and log tests. */
import type { Socket } from "node:net";
import { join } from "node:path";

const MAIN = join(import.meta.dir, "../../src/cli/main.ts");

export interface Served {
  readonly proc: ReturnType<typeof Bun.spawn>;
  logs(): string;
  /** Settles once the child's stderr has ended: all of its log is in `logs()`. */
  readonly logsEnded: Promise<void>;
  port(name: "SMTP" | "IMAP"): Promise<number>;
  /** The first log line after offset `from` that matches `re`; waits for it up to 20 s. */
  waitForLog(re: RegExp, from?: number): Promise<string>;
}

/** How a mailgator command is started: from source under this Bun (the default), or as another executable. */
export interface Runner {
  /** The argv before the command's own arguments; default this Bun and src/cli/main.ts. */
  readonly command?: readonly string[];
  /** The folder it runs in; default this process's. */
  readonly cwd?: string;
}

function argv(runner: Runner, args: readonly string[]): string[] {
  return [...(runner.command ?? [process.execPath, MAIN]), ...args];
}

/** `env`: the child's environment (Bun.spawn does not see later changes to process.env); default process.env. */
export function serveChild(
  config: string,
  format: "pretty" | "json" = "pretty",
  env = process.env,
  runner: Runner = {},
): Served {
  const proc = Bun.spawn(argv(runner, ["serve", "-c", config, "--log-format", format]), {
    stderr: "pipe",
    stdout: "pipe",
    env,
    ...(runner.cwd === undefined ? {} : { cwd: runner.cwd }),
  });
  let text = "";
  const reader = (proc.stderr as ReadableStream<Uint8Array>).getReader();
  const logsEnded = (async () => {
    const decoder = new TextDecoder();
    for (;;) {
      const { value, done } = await reader.read().catch(() => ({ value: undefined, done: true }));
      if (done) return;
      text += decoder.decode(value, { stream: true });
    }
  })();
  const waitForLog = async (re: RegExp, from = 0): Promise<string> => {
    for (let i = 0; i < 400; i++) {
      const line = text
        .slice(from)
        .split("\n")
        .find((l) => re.test(l));
      if (line !== undefined) return line;
      if (proc.exitCode !== null) break;
      await Bun.sleep(50);
    }
    throw new Error(`no log line matching ${re}:\n${text}`);
  };
  return {
    proc,
    logs: () => text,
    logsEnded,
    waitForLog,
    async port(name) {
      const line = await waitForLog(new RegExp(`${name} proxy listening on 127\\.0\\.0\\.1:\\d+`));
      return Number(/127\.0\.0\.1:(\d+)/.exec(line)![1]);
    },
  };
}

/** Lines of a child's log that the error of stopServed shows: the shutdown and what came just before it. */
export const STOP_LOG_TAIL_LINES = 40;
/** How long stopServed waits, after the exit, for the rest of the child's log. */
const STOP_LOG_DRAIN_MS = 2_000;

/** A child with its log: serveChild's, or another test file's own `serve` helper's. */
export interface ChildWithLogs {
  readonly proc: ReturnType<typeof Bun.spawn>;
  logs(): string;
  /** Settles once all of its log is in `logs()`; without it the log is taken as it is at the exit. */
  readonly logsEnded?: Promise<void>;
}

/** Stops a `mailgator serve` child as a supervisor does: SIGTERM, then cleanExit. */
export async function stopServed(served: ChildWithLogs): Promise<void> {
  if (served.proc.exitCode === null && served.proc.signalCode === null) served.proc.kill("SIGTERM");
  await cleanExit(served);
}

/**
 * Waits for a child that was sent SIGTERM (by stopServed, or by a `finally` that must not throw over the test's own
 * error). Exit code 0 is a clean stop; any other is an Error that says the code or the signal and shows the tail of
 * the child's log, which says why (an audit log that could not be closed, an error thrown during the shutdown).
 */
export async function cleanExit(served: ChildWithLogs): Promise<void> {
  const code = await served.proc.exited;
  if (code === 0) return;
  // The last lines may still be in the pipe when the exit is seen.
  if (served.logsEnded !== undefined) await Promise.race([served.logsEnded, Bun.sleep(STOP_LOG_DRAIN_MS)]);
  const tail = served.logs().trimEnd().split("\n").slice(-STOP_LOG_TAIL_LINES).join("\n");
  const signal = served.proc.signalCode === null ? "" : ` (signal ${served.proc.signalCode})`;
  throw new Error(
    `mailgator serve (pid ${served.proc.pid}) exited ${code}${signal} after SIGTERM, not 0; ` +
      `the last ${STOP_LOG_TAIL_LINES} lines of its log:\n${tail}`,
  );
}

/** Runs a mailgator command to completion. */
export function runCli(
  args: readonly string[],
  env = process.env,
  runner: Runner = {},
): { exitCode: number; stdout: string; stderr: string } {
  const r = Bun.spawnSync(argv(runner, args), {
    stdout: "pipe",
    stderr: "pipe",
    env,
    ...(runner.cwd === undefined ? {} : { cwd: runner.cwd }),
  });
  return { exitCode: r.exitCode, stdout: r.stdout.toString(), stderr: r.stderr.toString() };
}

export interface LineClient {
  send(line: string): void;
  /** Resolves once what the server sent matches `re` (all of it so far, from the start); fails after 20 s. */
  waitFor(re: RegExp): Promise<string>;
  text(): string;
  /** Settles when the server closed the connection. */
  readonly closed: Promise<void>;
  close(): void;
}

export async function lineClient(socket: Socket): Promise<LineClient> {
  let text = "";
  socket.on("data", (chunk: Buffer) => {
    text += chunk.toString("latin1");
  });
  socket.on("error", () => {});
  const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()));
  await new Promise<void>((resolve, reject) => {
    socket.once("connect", () => resolve());
    socket.once("error", reject);
  });
  return {
    send: (line) => socket.write(`${line}\r\n`),
    text: () => text,
    async waitFor(re) {
      for (let i = 0; i < 400; i++) {
        const m = re.exec(text);
        if (m) return m[0];
        await Bun.sleep(50);
      }
      throw new Error(`the server never sent ${re}; got:\n${text}`);
    },
    closed,
    close: () => socket.destroy(),
  };
}

/** SMTP: sends `line` and returns the final reply line to it (`NNN text`, after what was there); fails after 10 s. */
export async function smtpSay(c: LineClient, line: string): Promise<string> {
  const mark = c.text().length;
  c.send(line);
  for (let i = 0; i < 400; i++) {
    const reply = /^\d{3} .*$/m.exec(c.text().slice(mark));
    if (reply) return reply[0];
    await Bun.sleep(25);
  }
  throw new Error(`no reply to ${line}`);
}
