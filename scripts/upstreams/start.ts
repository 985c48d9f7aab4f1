/**
 * Starts Dovecot, Postfix and the local OAuth2 authorization server (and, with --nginx, an nginx
 * IMAP relay) on 127.0.0.1 from private configs under one runtime folder, prints their JSON
 * description and writes it to `<dir>/upstreams.json`. Idempotent: when they already run, prints the same description.
 *
 *   bun scripts/upstreams/start.ts [--dir D] [--nginx] [--imap-port N] [--imaps-port N]
 *                                  [--smtp-port N] [--smtps-port N] [--smtp7bit-port N] [--oauth-port N]
 *                                  [--nginx-port N] [--no-install]
 */
import { existsSync, mkdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Upstreams, UpstreamUser } from "./description.ts";
import { readUpstreams } from "./description.ts";
import { startDovecot, writeDovecotFiles } from "./dovecot.ts";
import { ensurePackages } from "./install.ts";
import type { Layout } from "./layout.ts";
import { FOLDERS, layout, MAIL_UID, USER_DOMAIN } from "./layout.ts";
import { withLock } from "./lock.ts";
import { startAuthHttp, startNginx } from "./nginx.ts";
import { startOAuthServer, writeOAuthFiles } from "./oauth.ts";
import { freePort, isListening, waitForPorts } from "./ports.ts";
import { HOOKS, startPostfix, writePostfixFiles } from "./postfix.ts";
import type { TrackedProcess } from "./processes.ts";
import { isAlive, terminate, track } from "./processes.ts";
import { stopProcesses } from "./stop.ts";
import { ensureCertificates } from "./tls.ts";
import { addUser, ensureOwnedDir } from "./users.ts";

export interface StartOptions {
  /** Runtime folder; default `.run/upstreams` in the repository. */
  readonly dir?: string;
  /** Also start nginx's IMAP relay. */
  readonly nginx?: boolean;
  /** Fixed ports; the others are chosen free. */
  readonly ports?: {
    readonly imap?: number;
    readonly imaps?: number;
    readonly smtp?: number;
    readonly smtps?: number;
    readonly smtp7bit?: number;
    readonly oauth?: number;
    readonly nginxImap?: number;
  };
  /** Install missing Debian packages when root (default true). */
  readonly install?: boolean;
  /** Progress messages (default: stderr). */
  readonly log?: (line: string) => void;
}

/** Users every runtime folder starts with; tests make their own through tests/fixtures. */
const DEFAULT_USERS = [
  { address: `alice@${USER_DOMAIN}`, password: "alice-password" },
  { address: `bob@${USER_DOMAIN}`, password: "bob-password" },
] as const;

const START_TIMEOUT_MS = 10_000;

/** Starts the servers (or finds them running) and returns their description. */
export async function startUpstreams(options: StartOptions = {}): Promise<Upstreams> {
  const paths = layout(options.dir);
  const log = options.log ?? ((line: string) => console.error(line));
  mkdirSync(paths.dir, { recursive: true, mode: 0o755 });
  return withLock(paths.lockFile, async () => {
    const running = await runningDescription(paths);
    if (running !== undefined) {
      if (!options.nginx || running.ports.nginxImap !== undefined) return running;
      return addNginx(paths, running, options, log);
    }
    if (existsSync(paths.descriptionFile)) {
      // Some of it died: end what is left, then start afresh.
      await stopProcesses(readUpstreams(paths.descriptionFile).processes);
      rmSync(paths.descriptionFile, { force: true });
    }
    return startFresh(paths, options, log);
  });
}

async function runningDescription(paths: Layout): Promise<Upstreams | undefined> {
  if (!existsSync(paths.descriptionFile)) return undefined;
  let description: Upstreams;
  try {
    description = readUpstreams(paths.descriptionFile);
  } catch {
    return undefined;
  }
  // A folder started by a version of these scripts without the OAuth2 server or the listener without 8BITMIME is
  // started afresh.
  if (description.oauth === undefined || description.ports.oauth === undefined) return undefined;
  if (description.ports.smtp7bit === undefined) return undefined;
  if (!description.processes.every(isAlive)) return undefined;
  const ports = Object.values(description.ports);
  const up = await Promise.all(ports.map((port) => isListening(port)));
  return up.every(Boolean) ? description : undefined;
}

async function startFresh(paths: Layout, options: StartOptions, log: (line: string) => void): Promise<Upstreams> {
  if (process.getuid?.() !== 0) {
    throw new Error("upstreams: must run as root (Postfix's master and Dovecot's privilege separation need it)");
  }
  if (options.install !== false) ensurePackages({ nginx: options.nginx === true, log });
  const ports = {
    imap: options.ports?.imap ?? (await freePort()),
    imaps: options.ports?.imaps ?? (await freePort()),
    smtp: options.ports?.smtp ?? (await freePort()),
    smtps: options.ports?.smtps ?? (await freePort()),
    smtp7bit: options.ports?.smtp7bit ?? (await freePort()),
    oauth: options.ports?.oauth ?? (await freePort()),
  };
  if (new Set(Object.values(ports)).size !== Object.keys(ports).length)
    throw new Error(`upstreams: ports must differ: ${JSON.stringify(ports)}`);
  for (const [name, port] of Object.entries(ports)) {
    if (await isListening(port)) throw new Error(`upstreams: port ${port} (${name}) is already in use on 127.0.0.1`);
  }

  const tls = ensureCertificates(paths.tlsDir);
  writeDovecotFiles(paths, tls, ports);
  writePostfixFiles(paths, tls, ports);
  ensureOwnedDir(paths.maildirRoot);
  ensureOwnedDir(join(paths.maildirRoot, USER_DOMAIN));
  for (const sub of ["cur", "new", "tmp"]) ensureOwnedDir(join(paths.sink, sub));
  const users: UpstreamUser[] = DEFAULT_USERS.map((entry) => addUser(paths, entry.address, entry.password));
  const oauth = writeOAuthFiles(paths, ports.oauth);
  // Leftovers of a process killed without stop.ts would make the daemons refuse to start.
  rmSync(join(paths.dovecotBaseDir, "master.pid"), { force: true });

  const processes: TrackedProcess[] = [];
  try {
    // First, so that Dovecot's first introspection finds it.
    processes.push(track("oauth-server", await startOAuthServer(paths, oauth.serverConfig)));
    processes.push(track("dovecot", await startDovecot(paths)));
    processes.push(track("postfix", await startPostfix(paths)));
    await waitForPorts(ports, START_TIMEOUT_MS);
    let description: Upstreams = {
      version: 1,
      host: "127.0.0.1",
      tlsName: "localhost",
      ports,
      caFile: tls.caFile,
      userDomain: USER_DOMAIN,
      users,
      folders: FOLDERS,
      maildirRoot: paths.maildirRoot,
      sink: paths.sink,
      usersDir: paths.usersDir,
      mailUid: MAIL_UID,
      hooks: { reject: `${HOOKS.reject}*@any → 550 5.1.1`, tempfail: `${HOOKS.tempfail}*@any → 451 4.3.0` },
      dir: paths.dir,
      logs: { dovecot: paths.dovecotLog, postfix: paths.postfixLog, oauth: paths.oauthLog },
      oauth: oauth.description,
      processes,
    };
    writeDescription(paths, description);
    if (options.nginx) description = await addNginx(paths, description, options, log);
    return description;
  } catch (error) {
    for (const started of processes.reverse()) await terminate(started);
    throw error;
  }
}

async function addNginx(
  paths: Layout,
  description: Upstreams,
  options: StartOptions,
  log: (line: string) => void,
): Promise<Upstreams> {
  if (options.install !== false) ensurePackages({ nginx: true, log });
  const nginxImap = options.ports?.nginxImap ?? (await freePort());
  const authHttp = await freePort();
  const started: TrackedProcess[] = [];
  try {
    started.push(track("nginx-auth-http", await startAuthHttp(paths, authHttp, description.ports.imap)));
    started.push(track("nginx", await startNginx(paths, { nginxImap, authHttp })));
    await waitForPorts({ nginxImap, authHttp }, START_TIMEOUT_MS);
  } catch (error) {
    for (const process of started.reverse()) await terminate(process);
    throw error;
  }
  const updated: Upstreams = {
    ...description,
    ports: { ...description.ports, nginxImap },
    logs: { ...description.logs, nginx: paths.nginxLog, authHttp: paths.authHttpLog },
    processes: [...description.processes, ...started],
  };
  writeDescription(paths, updated);
  return updated;
}

function writeDescription(paths: Layout, description: Upstreams): void {
  const temporary = `${paths.descriptionFile}.tmp`;
  writeFileSync(temporary, `${JSON.stringify(description, null, 2)}\n`);
  renameSync(temporary, paths.descriptionFile);
}

function parseArgs(argv: string[]): StartOptions {
  const options: { dir?: string; nginx?: boolean; install?: boolean; ports: Record<string, number> } = { ports: {} };
  const portFlags: Record<string, string> = {
    "--imap-port": "imap",
    "--imaps-port": "imaps",
    "--smtp-port": "smtp",
    "--smtps-port": "smtps",
    "--smtp7bit-port": "smtp7bit",
    "--oauth-port": "oauth",
    "--nginx-port": "nginxImap",
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    const portName = portFlags[arg];
    if (arg === "--dir") options.dir = required(argv, ++i, arg);
    else if (arg === "--nginx") options.nginx = true;
    else if (arg === "--no-install") options.install = false;
    else if (portName !== undefined) {
      const port = Number(required(argv, ++i, arg));
      if (!Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`upstreams: ${arg} needs a port number`);
      options.ports[portName] = port;
    } else
      throw new Error(
        `upstreams: unknown argument ${arg}\nusage: bun scripts/upstreams/start.ts [--dir D] [--nginx] [--no-install]` +
          " [--imap-port N] [--imaps-port N] [--smtp-port N] [--smtps-port N] [--smtp7bit-port N] [--oauth-port N]" +
          " [--nginx-port N]",
      );
  }
  return options;
}

function required(argv: string[], index: number, flag: string): string {
  const value = argv[index];
  if (value === undefined) throw new Error(`upstreams: ${flag} needs a value`);
  return value;
}

if (import.meta.main) {
  try {
    const started = Date.now();
    const description = await startUpstreams(parseArgs(process.argv.slice(2)));
    console.log(JSON.stringify(description, null, 2));
    console.error(
      `upstreams: ready in ${Date.now() - started} ms; description in ${join(description.dir, "upstreams.json")}`,
    );
  } catch (error) {
    console.error(error instanceof Error ? error.message : String(error));
    process.exit(1);
  }
}
