/**
 * nginx's mail module as a pure IMAP relay in front of Dovecot's plain port, plus the tiny
 * auth_http endpoint it needs (a Bun process). Started only on request (`--nginx`).
 */
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { logTail } from "./dovecot.ts";
import type { Layout } from "./layout.ts";
import { startDaemon } from "./processes.ts";

const MAIL_MODULE = "/usr/lib/nginx/modules/ngx_mail_module.so";

export function nginxConfig(paths: Layout, ports: { nginxImap: number; authHttp: number }): string {
  return `# Written by scripts/upstreams/start.ts; rewritten at every start.
load_module ${MAIL_MODULE};
pid ${join(paths.nginxDir, "nginx.pid")};
error_log ${paths.nginxLog} notice;
worker_processes 2;
events {
  worker_connections 4096;
}
mail {
  server_name localhost;
  auth_http 127.0.0.1:${ports.authHttp}/auth;
  proxy_pass_error_message on;
  # With the default buffer nginx never sets TCP_NODELAY and large replies stall on delayed ACKs.
  proxy_buffer 64k;
  server {
    listen 127.0.0.1:${ports.nginxImap};
    protocol imap;
    imap_auth login plain;
  }
}
`;
}

/** Starts the auth_http helper (detached, own session) and returns its PID. */
export async function startAuthHttp(paths: Layout, port: number, imapPort: number): Promise<number> {
  mkdirSync(paths.nginxDir, { recursive: true });
  const pidFile = join(paths.nginxDir, "auth-http.pid");
  writeFileSync(pidFile, "");
  const child = Bun.spawn(
    [process.execPath, join(import.meta.dir, "auth-http.ts"), String(port), String(imapPort), pidFile],
    {
      detached: true,
      stdin: "ignore",
      stdout: Bun.file(paths.authHttpLog),
      stderr: Bun.file(paths.authHttpLog),
    },
  );
  child.unref();
  const deadline = Date.now() + 5000;
  while (Date.now() < deadline) {
    const pid = Number(readFileSync(pidFile, "utf8").trim());
    if (pid > 0) return pid;
    if (child.exitCode !== null) break;
    await Bun.sleep(20);
  }
  throw new Error(`upstreams: the auth_http helper for nginx did not start${logTail(paths.authHttpLog)}`);
}

/** Starts nginx (it daemonizes) and returns the master's PID. */
export async function startNginx(paths: Layout, ports: { nginxImap: number; authHttp: number }): Promise<number> {
  mkdirSync(paths.nginxDir, { recursive: true });
  writeFileSync(paths.nginxConf, nginxConfig(paths, ports));
  const pidFile = join(paths.nginxDir, "nginx.pid");
  return startDaemon(
    "nginx",
    ["/usr/sbin/nginx", "-p", paths.nginxDir, "-e", paths.nginxLog, "-c", paths.nginxConf],
    join(paths.nginxDir, "start.out"),
    pidFile,
    () => logTail(paths.nginxLog),
  );
}
