/**
 * Memory of logged-in idle IMAP sessions (docs/benchmarks.md, "IMAP"): opens N connections to an IMAP server,
 * logs each in, keeps them open without a command, and reports the server process's RSS (`VmRSS` from /proc)
 * before the first connection and once every session is logged in, with the growth per session.
 *
 *   bun scripts/bench/idle-sessions.ts --port P --pid PID --user U --pass P [--sessions 1000] [--parallel 50]
 *
 * `--pid` is the process to read: the proxy (`mailgator serve` re-executes itself once; give the pid that listens).
 * Its `[limits]` must allow the sessions: `max_connections`, `max_connections_per_ip`, `max_sessions_per_agent`
 * (docs/config.md), and the upstream's per-user connection limit too.
 */

import { readFileSync } from "node:fs";
import { connect, type Socket } from "node:net";
import { benchOptions } from "./args.ts";

const USAGE =
  "bun scripts/bench/idle-sessions.ts --port P --pid PID --user U --pass P [--sessions 1000] [--parallel 50]";
const OPTIONS = { values: ["port", "pid", "user", "pass", "sessions", "parallel"], switches: [] };
const opts = benchOptions(process.argv.slice(2), USAGE, OPTIONS);

const port = opts.number("port");
const pid = opts.number("pid");
const user = opts.text("user");
const pass = opts.text("pass");
const sessions = opts.number("sessions", 1000);
const parallel = opts.number("parallel", 50);

function rssMiB(): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  if (m === null) throw new Error(`idle-sessions: no VmRSS for pid ${pid}`);
  return Number(m[1]) / 1024;
}

/** Connects and logs in; resolves with the open socket once the LOGIN is answered OK. */
function login(): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const sock = connect(port, "127.0.0.1");
    let buf = "";
    let sent = false;
    sock.setEncoding("latin1");
    sock.on("error", reject);
    sock.on("data", (chunk: string) => {
      buf += chunk;
      if (!sent && buf.includes("\r\n")) {
        if (!buf.startsWith("* OK")) return reject(new Error(`greeting: ${buf.trim()}`));
        sent = true;
        buf = "";
        sock.write(`a LOGIN "${user}" "${pass}"\r\n`);
        return;
      }
      const m = /^a (OK|NO|BAD)[^\r]*\r\n/m.exec(buf);
      if (m === null) return;
      if (m[1] !== "OK") return reject(new Error(`login: ${m[0].trim()}`));
      sock.removeAllListeners("data");
      resolve(sock);
    });
  });
}

const before = rssMiB();
const open: Socket[] = [];
const started = performance.now();
while (open.length < sessions) {
  const n = Math.min(parallel, sessions - open.length);
  open.push(...(await Promise.all(Array.from({ length: n }, login))));
}
const loginSeconds = (performance.now() - started) / 1000;
await Bun.sleep(2000);
const after = rssMiB();
console.log(
  JSON.stringify({
    sessions: open.length,
    loginSeconds: Number(loginSeconds.toFixed(2)),
    rssBeforeMiB: Number(before.toFixed(1)),
    rssAfterMiB: Number(after.toFixed(1)),
    perSessionKiB: Number((((after - before) * 1024) / open.length).toFixed(1)),
  }),
);
for (const s of open) s.destroy();
