/** `mailgator account login NAME` and `mailgator account status [NAME]` (docs/accounts.md). */

import { createInterface } from "node:readline";
import { LoginError, loginDevice, loginLoopback, loginPaste } from "../../accounts/login.ts";
import { ensureSchema, matches, readStatus, readTokens, saveTokens, TOKEN_KIND } from "../../accounts/records.ts";
import { type AccountConfig, type Config, loadConfig, type OAuth2AccountConfig, ownEntry } from "../../config/index.ts";
import { escapes, terminalJson } from "../../mail/display.ts";
import { SealedRecordError, SealedStore } from "../../state/store.ts";
import { type CommandContext, configOf, EXIT_FAILURE, EXIT_OK, parse, UsageError } from "../args.ts";

export const usage = `Usage: mailgator account login NAME [-c FILE] [--paste | --device]
       mailgator account status [NAME] [-c FILE] [--json]

login: gets the first OAuth2 grant of [accounts.NAME] (auth = "oauth2") and
stores its tokens sealed in the state database. It prints a URL to open in a
browser and waits for the redirect to http://127.0.0.1:<port>/callback.
  --paste    for a machine the browser cannot reach: open the URL anywhere,
             then paste the address the browser ends on
  --device   device-code flow: enter a short code on the provider's page
Accounts with grant = "client_credentials" need no login.

status: each account's state (ok, expires in, needs re-authorization, last
error). It never prints a token.

Options:
  -c, --config FILE   the config file (default: $MAILGATOR_CONFIG, else
                      ./mailgator.toml, else /etc/mailgator/mailgator.toml)
      --json          status as JSON
  -h, --help          this help`;

function oauthAccount(config: Config, name: string): OAuth2AccountConfig {
  const account = ownEntry(config.accounts, name);
  if (account === undefined)
    throw new UsageError(`no account named ${JSON.stringify(name)} in ${escapes(config.file)}`, usage);
  if (account.auth !== "oauth2")
    throw new UsageError(`account ${name} uses a password (auth = "password"): there is nothing to log in to`, usage);
  return account;
}

function stdinLine(): Promise<string | null> {
  const rl = createInterface({ input: process.stdin, terminal: false });
  return new Promise((resolve) => {
    let done = false;
    rl.once("line", (line) => {
      done = true;
      rl.close();
      resolve(line);
    });
    rl.once("close", () => {
      if (!done) resolve(null);
    });
  });
}

async function login(ctx: CommandContext, config: Config, name: string, mode: "loopback" | "paste" | "device") {
  const account = oauthAccount(config, name);
  if (account.oauth2.grant === "client_credentials") {
    ctx.out(
      `account ${name} uses grant = "client_credentials": it needs no login; the proxy fetches its tokens itself.`,
    );
    return EXIT_OK;
  }
  // Open (and check the key) before the person spends time in a browser.
  const store = SealedStore.open(config.state.path, {
    secretsFile: config.state.secretsFile,
    env: ctx.env,
    create: true,
  })!;
  try {
    ensureSchema(store);
    const io = { say: ctx.out, readLine: stdinLine };
    let grant: Awaited<ReturnType<typeof loginLoopback>>;
    try {
      const started = Date.now();
      grant =
        mode === "device"
          ? await loginDevice(account, io)
          : mode === "paste"
            ? await loginPaste(account, io)
            : await loginLoopback(account, io);
      if (grant.refreshToken === null)
        throw new LoginError(
          "the provider issued no refresh token: check that the scopes allow offline access " +
            "(Microsoft: offline_access)",
        );
      const now = Date.now();
      saveTokens(
        store,
        name,
        {
          refreshToken: grant.refreshToken,
          accessToken: grant.accessToken,
          expiresAt: started + grant.expiresIn * 1000,
          obtainedAt: started,
          clientId: account.oauth2.clientId,
          tokenUrl: account.oauth2.tokenUrl,
        },
        now,
      );
    } catch (e) {
      if (!(e instanceof LoginError)) throw e;
      process.stderr.write(`mailgator: account ${name}: login failed: ${escapes(e.message)}\n`);
      return EXIT_FAILURE;
    }
    ctx.out(`account ${name}: logged in; tokens stored sealed in ${escapes(store.path)}`);
    return EXIT_OK;
  } finally {
    store.close();
  }
}

export interface AccountStatusView {
  readonly account: string;
  readonly auth: "password" | "oauth2";
  readonly provider: string | null;
  readonly grant: string | null;
  /**
   * ok, needs-reauthorization, retrying, not-logged-in, other-client (the stored login is another client's),
   * no-token-yet (client credentials), or password.
   */
  readonly state: string;
  /** Seconds until the cached access token expires (negative: expired), null without one. */
  readonly expiresIn: number | null;
  readonly since: string | null;
  readonly lastError: string | null;
  readonly lastErrorAt: string | null;
  readonly refreshedAt: string | null;
}

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

function view(account: AccountConfig, store: SealedStore | null, tokenIds: ReadonlySet<string>, now: number) {
  if (account.auth === "password")
    return {
      account: account.name,
      auth: "password",
      provider: null,
      grant: null,
      state: "password",
      expiresIn: null,
      since: null,
      lastError: null,
      lastErrorAt: null,
      refreshedAt: null,
    } satisfies AccountStatusView;
  const row = store ? readStatus(store, account.name) : null;
  const stored = store && tokenIds.has(account.name) ? storedLogin(store, account) : "none";
  const loggedIn = stored === "usable";
  const state =
    row?.state === "needs-reauthorization" || stored === "unreadable"
      ? "needs-reauthorization"
      : loggedIn && row
        ? row.state
        : account.oauth2.grant === "client_credentials"
          ? "no-token-yet"
          : stored === "other-client"
            ? "other-client"
            : "not-logged-in";
  return {
    account: account.name,
    auth: "oauth2",
    provider: account.oauth2.provider,
    grant: account.oauth2.grant,
    state,
    expiresIn: !loggedIn || row?.expiresAt == null ? null : Math.round((row.expiresAt - now) / 1000),
    since: iso(row?.since ?? null),
    lastError: row?.lastError ?? null,
    lastErrorAt: iso(row?.lastErrorAt ?? null),
    refreshedAt: iso(row?.refreshedAt ?? null),
  } satisfies AccountStatusView;
}

/**
 * Whether the stored login is one the proxy uses: tokens issued to the client the config names now (the proxy ignores
 * others, src/accounts/records.ts `matches`: the config names a new client_id or token_url since the login), and
 * readable under the key (the proxy takes an unreadable record for a login to be made again).
 */
function storedLogin(
  store: SealedStore,
  account: OAuth2AccountConfig,
): "usable" | "other-client" | "unreadable" | "none" {
  try {
    const record = readTokens(store, account.name);
    if (record === null) return "none";
    return matches(record, account.oauth2) ? "usable" : "other-client";
  } catch (e) {
    if (e instanceof SealedRecordError) return "unreadable";
    throw e;
  }
}

function describe(v: AccountStatusView): string {
  if (v.auth === "password") return `${v.account}: password login (nothing to refresh)`;
  const head = `${v.account}: oauth2 (${v.provider}, ${v.grant})`;
  const lines = [head];
  const what: Record<string, string> = {
    ok: "ok",
    retrying: "ok, but the last token request failed; retrying",
    "needs-reauthorization": `NEEDS RE-AUTHORIZATION: run \`mailgator account login ${v.account}\``,
    "not-logged-in": `not logged in: run \`mailgator account login ${v.account}\``,
    "other-client":
      "not logged in: the stored login was made for another client_id or token_url: run " +
      `\`mailgator account login ${v.account}\``,
    "no-token-yet": "no token yet (the proxy fetches one when it first needs it)",
  };
  lines.push(`  state: ${what[v.state] ?? v.state}${v.since ? ` (since ${v.since})` : ""}`);
  if (v.expiresIn !== null)
    lines.push(
      v.expiresIn > 0
        ? `  access token expires in ${v.expiresIn} s`
        : `  access token expired ${-v.expiresIn} s ago (refreshed when next needed)`,
    );
  if (v.refreshedAt) lines.push(`  last token: ${v.refreshedAt}`);
  // The provider wrote the error (RFC 6749 §5.2); rows stored before it was escaped there are escaped here.
  if (v.lastError) lines.push(`  last error: ${escapes(v.lastError)} (${v.lastErrorAt})`);
  return lines.join("\n");
}

function status(ctx: CommandContext, config: Config, name: string | undefined, json: boolean): number {
  if (name !== undefined && ownEntry(config.accounts, name) === undefined)
    throw new UsageError(`no account named ${JSON.stringify(name)} in ${escapes(config.file)}`, usage);
  const accounts = Object.values(config.accounts).filter((a) => name === undefined || a.name === name);
  const needsState = accounts.some((a) => a.auth === "oauth2");
  const store = needsState
    ? SealedStore.open(config.state.path, {
        secretsFile: config.state.secretsFile,
        env: ctx.env,
        create: false,
        // Status only reads: nothing is created, migrated or written
        // (docs/operations.md "Commands that only read the state database").
        readOnly: true,
      })
    : null;
  try {
    if (store) ensureSchema(store);
    const ids = new Set(store?.ids(TOKEN_KIND) ?? []);
    const views = accounts.map((a) => view(a, store, ids, Date.now()));
    ctx.out(json ? terminalJson(views, 2) : views.map(describe).join("\n") || "no [accounts] in the config");
    return EXIT_OK;
  } finally {
    store?.close();
  }
}

export async function account(ctx: CommandContext): Promise<number> {
  const { values, positionals } = parse(
    ctx.argv,
    {
      config: { type: "string", short: "c" },
      paste: { type: "boolean" },
      device: { type: "boolean" },
      json: { type: "boolean" },
    },
    usage,
    true,
  );
  if (values.help) return (ctx.out(usage), EXIT_OK);
  const [verb, name, ...rest] = positionals;
  if (rest.length > 0) throw new UsageError(`unexpected ${JSON.stringify(rest[0])}`, usage);
  if (verb === "login") {
    if (name === undefined) throw new UsageError("account login needs the account's NAME", usage);
    if (values.paste && values.device) throw new UsageError("give --paste or --device, not both", usage);
    if (values.json) throw new UsageError("--json is for account status", usage);
    const config = loadConfig(configOf(ctx, values.config), { env: ctx.env });
    return login(ctx, config, name, values.device ? "device" : values.paste ? "paste" : "loopback");
  }
  if (verb === "status") {
    if (values.paste || values.device) throw new UsageError("--paste and --device are for account login", usage);
    const config = loadConfig(configOf(ctx, values.config), { env: ctx.env });
    return status(ctx, config, name, values.json === true);
  }
  throw new UsageError("expected: account login NAME, or account status [NAME]", usage);
}
