/** `mailgator serve` as a child process, and a line-oriented socket client, for the reload and log tests. */
import type { Socket } from "node:net";
import { join } from "node:path";

const MAIN = join(import.meta.dir, "../../src/cli/main.ts");

export interface Served {
  readonly proc: ReturnType<typeof Bun.spawn>;
  logs(): string;
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
  void (async () => {
    const decoder = new TextDecoder();
    for (;;) {
      const { value, done } = await reader.read();
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
    waitForLog,
    async port(name) {
      const line = await waitForLog(new RegExp(`${name} proxy listening on 127\\.0\\.0\\.1:\\d+`));
      return Number(/127\.0\.0\.1:(\d+)/.exec(line)![1]);
    },
  };
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
