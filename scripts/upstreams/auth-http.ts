/**
 * The auth_http endpoint nginx's mail module asks before relaying a login: it accepts every
 * login and points nginx at Dovecot, which then checks the password itself. nginx is only a
 * byte relay here (the "pure relay" baseline for benchmarks).
 *
 * Usage: bun scripts/upstreams/auth-http.ts PORT DOVECOT_IMAP_PORT PID_FILE
 */
import { writeFileSync } from "node:fs";

const [port, imapPort, pidFile] = process.argv.slice(2);
if (port === undefined || imapPort === undefined || pidFile === undefined) {
  console.error("usage: bun scripts/upstreams/auth-http.ts PORT DOVECOT_IMAP_PORT PID_FILE");
  process.exit(2);
}

Bun.serve({
  hostname: "127.0.0.1",
  port: Number(port),
  fetch() {
    return new Response("", {
      headers: { "Auth-Status": "OK", "Auth-Server": "127.0.0.1", "Auth-Port": imapPort },
    });
  },
});
writeFileSync(pidFile, `${process.pid}\n`);
