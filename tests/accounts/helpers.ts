/**
 * Accounts against the local OAuth2 authorization server of the upstreams (docs/upstreams.md "OAuth2"): configs
 * whose `[accounts.main]` is a custom provider pointing at it, and the CLI run as a child process; and a Microsoft
 * account with its state database, for the in-process tests that script the token endpoint.
 */
import { expect } from "bun:test";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { readTokens, type TokenRecord } from "../../src/accounts/records.ts";
import { type Config, loadConfig, parseConfig } from "../../src/config/index.ts";
import { SealedStore } from "../../src/state/store.ts";
import {
  authorizationCodeFlow,
  control,
  LineClient,
  oauthServer,
  oauthServeToml,
  storeServeTokens,
  xoauth2,
} from "../fixtures/oauth.ts";
import { createMailbox, upstreams } from "../fixtures/upstreams.ts";

export const MAIN = join(import.meta.dir, "../../src/cli/main.ts");

export interface AccountSetup {
  readonly dir: string;
  readonly config: string;
}

/** The folders `oauthConfig` made: the test file that uses it removes them after its tests. */
export const madeDirs: string[] = [];

/**
 * A config with one OAuth2 account `main` for `username`, its state and key in `dir` (fresh unless given).
 * `deviceUrl`: its `device_url` (default the server's).
 */
export function oauthConfig(
  username: string,
  options: {
    grant?: "authorization_code" | "client_credentials";
    dir?: string;
    name?: string;
    deviceUrl?: string;
  } = {},
): AccountSetup {
  const server = oauthServer();
  let dir = options.dir;
  if (dir === undefined) {
    dir = mkdtempSync(join(tmpdir(), "mg-oauth-"));
    madeDirs.push(dir);
  }
  const config = join(dir, `${options.name ?? "mailgator"}.toml`);
  writeFileSync(
    config,
    [
      `[accounts.main]`,
      `username = ${JSON.stringify(username)}`,
      `auth = "oauth2"`,
      `provider = "custom"`,
      `grant = "${options.grant ?? "authorization_code"}"`,
      `client_id = ${JSON.stringify(server.clientId)}`,
      `client_secret = ${JSON.stringify(server.clientSecret)}`,
      `authorize_url = ${JSON.stringify(server.authorizeUrl)}`,
      `token_url = ${JSON.stringify(server.tokenUrl)}`,
      `device_url = ${JSON.stringify(options.deviceUrl ?? server.deviceUrl)}`,
      `scopes = ["mail"]`,
      `[audit]`,
      `path = "audit.db"`,
      ``,
    ].join("\n"),
  );
  return { dir, config };
}

/** Runs the CLI to completion. */
export function cli(args: string[], env: Record<string, string> = {}) {
  const p = Bun.spawnSync([process.execPath, MAIN, ...args], { env: { ...process.env, ...env } });
  return { code: p.exitCode, stdout: p.stdout.toString(), stderr: p.stderr.toString() };
}

/** A running CLI whose output is read line by line. */
export class Child {
  readonly proc;
  #out = "";
  #err = "";

  /** Runs `args` with Bun, or with `executable` (a compiled mailgator) when given. */
  constructor(args: string[], env: Record<string, string> = {}, executable: string = process.execPath) {
    this.proc = Bun.spawn([executable, ...args], {
      stdin: "pipe",
      stdout: "pipe",
      stderr: "pipe",
      env: { ...process.env, ...env },
    });
    void this.#pump(this.proc.stdout, (t) => (this.#out += t));
    void this.#pump(this.proc.stderr, (t) => (this.#err += t));
  }

  async #pump(stream: ReadableStream<Uint8Array>, add: (text: string) => void): Promise<void> {
    const decoder = new TextDecoder();
    for await (const chunk of stream) add(decoder.decode(chunk, { stream: true }));
  }

  get stdout(): string {
    return this.#out;
  }
  get stderr(): string {
    return this.#err;
  }

  /** Waits until stdout matches `pattern`; returns the match. */
  async waitFor(pattern: RegExp, ms = 15_000): Promise<RegExpMatchArray> {
    const until = Date.now() + ms;
    for (;;) {
      const m = this.#out.match(pattern);
      if (m) return m;
      if (Date.now() > until || this.proc.exitCode !== null)
        throw new Error(`no ${pattern} in output: ${JSON.stringify(this.#out)} / ${JSON.stringify(this.#err)}`);
      await Bun.sleep(20);
    }
  }

  write(text: string): void {
    this.proc.stdin.write(text);
    this.proc.stdin.flush();
  }

  async exit(): Promise<number> {
    return await this.proc.exited;
  }
}

/**
 * A config read from `<dir>/m.toml` with one Microsoft OAuth2 account (tenant contoso.onmicrosoft.com, a fixed
 * client id), the audit log beside it, and its fresh state database: what the in-process credential tests refresh
 * against a scripted token endpoint. `clientSecret`: the account uses the client_credentials grant with it.
 */
export function microsoftAccount(
  dir: string,
  o: { name?: string; username?: string; clientSecret?: string } = {},
): { config: Config; store: SealedStore } {
  const config = parseConfig(
    [
      `[accounts.${o.name ?? "work"}]`,
      `username = "${o.username ?? "agent@contoso.com"}"`,
      `auth = "oauth2"`,
      `provider = "microsoft"`,
      ...(o.clientSecret === undefined ? [] : [`grant = "client_credentials"`]),
      `tenant = "contoso.onmicrosoft.com"`,
      `client_id = "00000000-0000-0000-0000-00000000c11e"`,
      ...(o.clientSecret === undefined ? [] : [`client_secret = "${o.clientSecret}"`]),
      `[audit]`,
      `path = "audit.db"`,
    ].join("\n"),
    join(dir, "m.toml"),
  );
  const store = SealedStore.open(config.state.path, { secretsFile: config.state.secretsFile, env: {}, create: true })!;
  return { config, store };
}

/**
 * A user of the local authorization server whose refresh tokens rotate, logged in, and its serve config (agent token
 * `agentToken`) in a fresh folder named `prefix` plus random characters. `reuse`: a retired refresh token presented
 * again revokes the grant; `delayMs`: the server's token answers wait that long. `connect()` opens one process's
 * connection to the state database, pushed on `open` for the caller to close.
 */
export async function rotatingAccount(o: {
  prefix: string;
  agentToken: string;
  open: SealedStore[];
  reuse?: boolean;
  delayMs?: number;
}) {
  const user = (await createMailbox()).user;
  await control("rotation", { user, on: "true" });
  if (o.reuse === true) await control("reuse", { user, on: "true" });
  if (o.delayMs !== undefined && o.delayMs > 0) await control("delay", { user, ms: String(o.delayMs) });
  const dir = mkdtempSync(o.prefix);
  const path = join(dir, "mailgator.toml");
  writeFileSync(path, oauthServeToml(dir, o.agentToken, user));
  const login = await authorizationCodeFlow({ user });
  expect(login.status).toBe(200);
  storeServeTokens(dir, login);
  const config = loadConfig(path);
  /** One process's connection to the state database. */
  const connect = () => {
    const store = SealedStore.open(config.state.path, {
      secretsFile: config.state.secretsFile,
      env: {},
      create: false,
    })!;
    o.open.push(store);
    return store;
  };
  return { user, path, config, login, connect };
}

/** The tokens `account login` stored for account `main` of `config` (null: none), read as the proxy reads them. */
export function storedTokens(config: string): TokenRecord | null {
  const cfg = loadConfig(config);
  const store = SealedStore.open(cfg.state.path, { secretsFile: cfg.state.secretsFile, env: {}, create: false });
  if (store === null) return null;
  try {
    return readTokens(store, "main");
  } finally {
    store.close();
  }
}

/** What the local server says it issued for `user` (docs/upstreams.md: `GET tokens`). */
export async function issuedTokens(user: string): Promise<{ kind: string; value: string; grant: string }[]> {
  return (
    (await control("tokens", { user }, "GET")).body as { tokens: { kind: string; value: string; grant: string }[] }
  ).tokens;
}

/** `mailgator account status main --json`'s state of the account in `config`. */
export function accountState(config: string): string {
  return JSON.parse(cli(["account", "status", "main", "-c", config, "--json"]).stdout)[0].state;
}

/** Whether the project's Dovecot takes `token` as `user`'s (AUTHENTICATE XOAUTH2). */
export async function dovecotAccepts(user: string, token: string): Promise<boolean> {
  const imap = await LineClient.open(upstreams().ports.imap);
  try {
    await imap.until(/^\* OK/);
    imap.send(`a AUTHENTICATE XOAUTH2 ${xoauth2(user, token)}`);
    return /^a OK/m.test(await imap.until(/^a /));
  } finally {
    imap.close();
  }
}
