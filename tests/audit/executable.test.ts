/**
 * The compiled executable (`npm run build`) writes audit rows through its writer thread and reads them back: the
 * build line must name the writer as an entrypoint, or every row fails. Built with package.json's own build line
 * (tests/fixtures/compiled.ts) and run from a folder of its own; a login that the (closed) upstream port cannot check
 * is audited as an error.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { readFileSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { join } from "node:path";
import { ALLOCATOR_ENV } from "../../src/cli/allocator.ts";
import { cleanExit } from "../e2e/serve-child.ts";
import { buildAlone } from "../fixtures/compiled.ts";
import { scratchDir } from "./helpers.ts";

let scratch: ReturnType<typeof scratchDir>;
let exe: string;

beforeAll(() => {
  scratch = scratchDir();
  exe = join(buildAlone(scratch.dir), "mailgator");
});

afterAll(() => scratch.remove());

/** Sends lines one at a time, each after the previous reply's last line; returns every reply line. */
async function converse(port: number, lines: string[]): Promise<string[]> {
  const socket = connect(port, "127.0.0.1");
  const received: string[] = [];
  let buffer = "";
  let wake: (() => void) | null = null;
  socket.on("data", (chunk) => {
    buffer += chunk.toString("latin1");
    wake?.();
  });
  socket.on("close", () => wake?.());
  async function reply(): Promise<void> {
    for (;;) {
      const end = buffer.search(/^\d{3} .*\r\n/m);
      if (end !== -1) {
        const stop = buffer.indexOf("\r\n", end) + 2;
        received.push(
          ...buffer
            .slice(0, stop)
            .split("\r\n")
            .filter((l) => l !== ""),
        );
        buffer = buffer.slice(stop);
        return;
      }
      if (socket.destroyed) throw new Error(`connection closed; got ${JSON.stringify(received)}`);
      await new Promise<void>((resolve) => (wake = resolve));
    }
  }
  await reply(); // greeting
  for (const line of lines) {
    socket.write(`${line}\r\n`);
    await reply();
  }
  socket.destroy();
  return received;
}

test("the executable audits through its writer thread, and its audit command reads the rows", async () => {
  const config = scratch.file("mailgator.toml");
  // Port 1 on loopback: nothing listens, so the pass-through login cannot reach the upstream.
  writeFileSync(
    config,
    `[smtp]\nlisten_addr = "127.0.0.1:0"\nupstream_addr = "127.0.0.1:1"\nupstream_tls = "none"\n\n` +
      `[[rules]]\nname = "Deny everything"\naction = "deny"\n`,
  );
  const server = Bun.spawn([exe, "serve", "-c", config, "--log-format", "json"], { stdout: "pipe", stderr: "pipe" });
  let logs = "";
  const pump = (async () => {
    for await (const chunk of server.stderr) logs += new TextDecoder().decode(chunk);
  })();
  try {
    let port = 0;
    for (let i = 0; i < 200 && port === 0; i++) {
      port = Number(/SMTP proxy listening on 127\.0\.0\.1:(\d+)/.exec(logs)?.[1] ?? 0);
      if (port === 0) await Bun.sleep(50);
    }
    expect(port).toBeGreaterThan(0);
    // The executable re-executed itself (same PID) with the allocator tuned (src/cli/allocator.ts).
    const environ = readFileSync(`/proc/${server.pid}/environ`, "utf8").split("\0");
    for (const [name, value] of Object.entries(ALLOCATOR_ENV)) expect(environ).toContain(`${name}=${value}`);
    const plain = Buffer.from("\0mailbox-user\0secret").toString("base64");
    const replies = await converse(port, ["EHLO test", `AUTH PLAIN ${plain}`, "QUIT"]);
    expect(replies).toContain("221 2.0.0 Bye");
    expect(replies.some((l) => l.startsWith("454 4.7.0"))).toBe(true);
  } finally {
    server.kill("SIGTERM");
  }
  await cleanExit({ proc: server, logs: () => logs });
  await pump;
  expect(logs).not.toContain("writer thread");

  const audit = Bun.spawnSync([exe, "audit", "-c", config, "--json"], { stderr: "pipe" });
  expect(audit.exitCode).toBe(0);
  const rows = audit.stdout
    .toString()
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l) as Record<string, unknown>);
  expect(rows).toHaveLength(1);
  expect(rows[0]).toMatchObject({ protocol: "smtp", command: "AUTH", target: "mailbox-user", decision: "error" });
  expect(String(rows[0]?.["reason"])).toContain("upstream unavailable");
  expect(JSON.stringify(rows)).not.toContain("secret");
}, 120_000);
