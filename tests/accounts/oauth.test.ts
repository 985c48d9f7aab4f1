// OAuth2 accounts against the local authorization server of the upstreams (docs/accounts.md): each login path of
// `mailgator account login`, client credentials, refresh ahead of expiry under concurrency, rotation across a
// SIGKILL, revocation, token endpoint failures, and no token in clear in any file the proxy writes.
import { afterAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import {
  chownSync,
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  AccountCredentials,
  AccountNeedsReauthorization,
  AccountTemporarilyUnavailable,
} from "../../src/accounts/index.ts";
import { readStatus, readTokens } from "../../src/accounts/records.ts";
import { AuditLog } from "../../src/audit/index.ts";
import { type Config, loadConfig } from "../../src/config/index.ts";
import { SealedStore } from "../../src/state/store.ts";
import { ALONE_ENV, buildAlone } from "../fixtures/compiled.ts";
import { createMailbox } from "../fixtures/index.ts";
import { control, LineClient, oauthServer, xoauth2 } from "../fixtures/oauth.ts";
import { upstreams } from "../fixtures/upstreams.ts";
import { Child, cli, MAIN, madeDirs, oauthConfig } from "./helpers.ts";

// Each test runs the CLI as a child process several times; on a loaded machine one start takes seconds.
setDefaultTimeout(120_000);

/** Every state folder this file made: the last test greps their files for every token the server issued for `users`. */
const dirs: string[] = [];
const users: string[] = [];
const open: { close(): void }[] = [];

afterAll(() => {
  for (const o of open) o.close();
  for (const dir of [...madeDirs, ...binDirs]) rmSync(dir, { recursive: true, force: true });
});

/** Folders of compiled binaries, removed after the file's tests. */
const binDirs: string[] = [];

async function user(): Promise<string> {
  const mailbox = await createMailbox();
  users.push(mailbox.user);
  return mailbox.user;
}

/** `account login main` through the loopback redirect, the URL followed by a plain HTTP client. */
async function login(config: string): Promise<void> {
  const child = new Child([MAIN, "account", "login", "main", "-c", config]);
  const [url] = await child.waitFor(/http:\/\/127\.0\.0\.1:\d+\/authorize\?\S+/);
  const page = await fetch(url!); // the server's 302 goes to the CLI's loopback listener
  expect(page.status).toBe(200);
  expect(await page.text()).toContain("login received");
  expect(await child.exit()).toBe(0);
  expect(child.stdout).toContain("logged in");
}

function credentials(
  config: string,
  audit?: AuditLog,
): { credentials: AccountCredentials; store: SealedStore; cfg: Config } {
  const cfg = loadConfig(config);
  const store = SealedStore.open(cfg.state.path, { secretsFile: cfg.state.secretsFile, env: {}, create: true })!;
  open.push(store);
  const quiet = { error: () => {}, warn: () => {}, info: () => {} };
  const c = new AccountCredentials({ config: cfg, store, audit: audit && ((e) => audit.record(e)), log: quiet });
  return { credentials: c, store, cfg };
}

async function tokenCount(userName: string, grant: string): Promise<number> {
  const counters = (await control("counters", {}, "GET")).body as {
    tokenByUser: Record<string, Record<string, number>>;
  };
  return counters.tokenByUser[userName]?.[grant] ?? 0;
}

interface ServerToken {
  kind: "access" | "refresh";
  value: string;
  user: string;
  expiresAt: number | null;
  revoked: boolean;
}

async function serverTokens(userName: string): Promise<ServerToken[]> {
  return ((await control("tokens", { user: userName }, "GET")).body as { tokens: ServerToken[] }).tokens;
}

async function oauthToken(c: AccountCredentials): Promise<string> {
  const credential = await c.credentialFor("main");
  if (credential.kind !== "oauth2") throw new Error("expected an oauth2 credential");
  return credential.accessToken;
}

describe("account login", () => {
  test("loopback: completes when a plain HTTP client follows the printed URL; Dovecot accepts the token", async () => {
    const name = await user();
    const setup = oauthConfig(name);
    dirs.push(setup.dir);
    const child = new Child([MAIN, "account", "login", "main", "-c", setup.config]);
    const [url] = await child.waitFor(/http:\/\/127\.0\.0\.1:\d+\/authorize\?\S+/);
    const [, callback] = await child.waitFor(/Waiting for the redirect to (\S+) /);
    // A request without this login's state (a stray page, an attacker's code) is refused and changes nothing.
    expect((await fetch(`${callback}?code=forged&state=guess`)).status).toBe(404);
    const page = await fetch(url!);
    expect(page.status).toBe(200);
    expect(await page.text()).toContain("login received");
    expect(await child.exit()).toBe(0);
    const { credentials: c } = credentials(setup.config);
    const token = await oauthToken(c);
    expect(token.length).toBeGreaterThan(10);
    const imap = await LineClient.open(upstreams().ports.imap);
    try {
      await imap.until(/^\* OK/);
      imap.send(`a AUTHENTICATE XOAUTH2 ${xoauth2(name, token)}`);
      expect(await imap.until(/^a /)).toMatch(/^a OK/m);
    } finally {
      imap.close();
    }
    const status = JSON.parse(cli(["account", "status", "main", "-c", setup.config, "--json"]).stdout);
    expect(status[0].state).toBe("ok");
    expect(status[0].expiresIn).toBeGreaterThan(3000);
    expect(JSON.stringify(status)).not.toContain(token);
    // The config names another client since (a new registration): the proxy does not use tokens issued to the old
    // one (src/accounts/records.ts `matches`), and status said "ok" all the same.
    const text = readFileSync(setup.config, "utf8");
    writeFileSync(setup.config, text.replace(/^client_id = "(.*)"$/m, 'client_id = "$1-new"'));
    const moved = JSON.parse(cli(["account", "status", "main", "-c", setup.config, "--json"]).stdout);
    expect(moved[0].state).toBe("other-client");
    expect(moved[0].expiresIn).toBe(null);
    expect(cli(["account", "status", "main", "-c", setup.config]).stdout).toContain(
      "the stored login was made for another client_id or token_url: run `mailgator account login main`",
    );
    const { credentials: other } = credentials(setup.config);
    await expect(oauthToken(other)).rejects.toBeInstanceOf(AccountNeedsReauthorization);
    writeFileSync(setup.config, text);
  });

  test("root in the service user's folder: the state and key it makes are that user's, who can use them", async () => {
    // docs/install.md: `/var/lib/mailgator` is the service user's; here nobody (65534) stands for that user.
    expect(process.geteuid?.()).toBe(0);
    const name = await user();
    const setup = oauthConfig(name);
    dirs.push(setup.dir);
    chownSync(setup.dir, 65534, 65534);
    await login(setup.config);
    const made = readdirSync(setup.dir).filter((file) => file !== "mailgator.toml");
    expect(made).toContain("mailgator-state.db");
    expect(made).toContain("mailgator-secrets.key");
    for (const file of made) expect(statSync(join(setup.dir, file)).uid).toBe(65534);
    // As that user, as the service would: the state opens under the key and holds the login.
    const status = Bun.spawnSync(
      [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        process.execPath,
        MAIN,
        "account",
        "status",
        "main",
        "-c",
        setup.config,
        "--json",
      ],
      { env: process.env },
    );
    expect(status.stderr.toString()).toBe("");
    expect(status.exitCode).toBe(0);
    expect(JSON.parse(status.stdout.toString())[0].state).toBe("ok");
  });

  test("--paste: the final redirect URL pasted on stdin completes the login", async () => {
    const name = await user();
    const setup = oauthConfig(name);
    dirs.push(setup.dir);
    const child = new Child([MAIN, "account", "login", "main", "-c", setup.config, "--paste"]);
    const [url] = await child.waitFor(/http:\/\/127\.0\.0\.1:\d+\/authorize\?\S+/);
    await child.waitFor(/paste it here/);
    const response = await fetch(url!, { redirect: "manual" });
    const location = response.headers.get("location")!;
    expect(location.startsWith("http://127.0.0.1/callback?")).toBe(true);
    child.write(`${location}\n`);
    expect(await child.exit()).toBe(0);
    expect(child.stdout).toContain("logged in");
    expect(await tokenCount(name, "authorization_code")).toBe(1);
  });

  test("--paste refuses a URL with another login's state", async () => {
    const setup = oauthConfig(await user());
    dirs.push(setup.dir);
    const child = new Child([MAIN, "account", "login", "main", "-c", setup.config, "--paste"]);
    await child.waitFor(/paste it here/);
    child.write("http://127.0.0.1/callback?code=abc&state=not-this-one\n");
    expect(await child.exit()).toBe(1);
    expect(child.stderr).toContain("login failed");
    expect(cli(["account", "status", "main", "-c", setup.config, "--json"]).stdout).toContain('"not-logged-in"');
  });

  test("--device: the printed code approved at the verification page completes the login", async () => {
    const setup = oauthConfig(oauthServer().user.user);
    dirs.push(setup.dir);
    const child = new Child([MAIN, "account", "login", "main", "-c", setup.config, "--device"]);
    const [, uri, code] = await child.waitFor(/open (\S+) and enter the code (\S+)/);
    expect(uri).toBe(`${oauthServer().issuer}/device`);
    const approved = await fetch(`${oauthServer().issuer}/device/approve?user_code=${encodeURIComponent(code!)}`);
    expect(approved.status).toBe(200);
    expect(await child.exit()).toBe(0);
    expect(child.stdout).toContain("logged in");
  });

  test("client_credentials: no login; the proxy's credentials fetch a token by themselves", async () => {
    const setup = oauthConfig(oauthServer().user.user, { grant: "client_credentials" });
    dirs.push(setup.dir);
    const said = cli(["account", "login", "main", "-c", setup.config]);
    expect(said.code).toBe(0);
    expect(said.stdout).toContain("needs no login");
    const { credentials: c } = credentials(setup.config);
    const token = await oauthToken(c);
    const known = await serverTokens(oauthServer().user.user);
    expect(known.some((t) => t.value === token && t.kind === "access" && !t.revoked)).toBe(true);
    expect(cli(["account", "status", "-c", setup.config]).stdout).toContain("state: ok");
  });
});

describe("staying logged in", () => {
  test("tokens living 3 s: 20 concurrent callers, refreshed before expiry, one token request per expiry", async () => {
    const name = await user();
    const setup = oauthConfig(name);
    dirs.push(setup.dir);
    await control("lifetime", { user: name, seconds: "3" });
    await login(setup.config);
    const { credentials: c } = credentials(setup.config);
    const seen = new Set<string>();
    const until = Date.now() + 8_000;
    while (Date.now() < until) {
      const batch = await Promise.all(Array.from({ length: 20 }, () => oauthToken(c)));
      const now = Date.now();
      const known = new Map((await serverTokens(name)).map((t) => [t.value, t]));
      for (const token of batch) {
        seen.add(token);
        const record = known.get(token)!;
        expect(record.revoked).toBe(false);
        expect(record.expiresAt!).toBeGreaterThan(now); // never an expired token
      }
      await Bun.sleep(100);
    }
    // A refresh ahead of expiry runs in the background while callers still get the old token: let the last one
    // finish and hand out its token. Two rounds: the first call may itself start one (its token past half its
    // life); the second gets that refresh's token, too young to start another.
    for (let round = 0; round < 2; round++) {
      await Bun.sleep(500);
      seen.add(await oauthToken(c));
    }
    const refreshes = await tokenCount(name, "refresh_token");
    // Every token handed out after the first came from a refresh, and at most one refresh's token went unused (one
    // whose callers, on a loaded machine, came back only after it was half spent).
    expect(refreshes).toBeGreaterThanOrEqual(seen.size - 1);
    expect(refreshes).toBeLessThanOrEqual(seen.size);
    // None was wasted on a concurrent caller: one token request at a time, never two within half a lifetime.
    const issued = (await serverTokens(name))
      .filter((t) => t.kind === "access")
      .map((t) => t.expiresAt!)
      .sort((a, b) => a - b);
    for (let i = 1; i < issued.length; i++) expect(issued[i]! - issued[i - 1]!).toBeGreaterThanOrEqual(1_000);
    // Refreshed ahead of expiry: at least one per lifetime, at most one per half lifetime (MIN_USE_FRACTION).
    expect(refreshes).toBeGreaterThanOrEqual(2);
    expect(refreshes).toBeLessThanOrEqual(Math.ceil(8 / 1.5) + 1);
  });

  test("a rotated refresh token survives SIGKILL right after the rotation; the next start uses it", async () => {
    const name = await user();
    const setup = oauthConfig(name);
    dirs.push(setup.dir);
    await control("rotation", { user: name, on: "true" });
    await login(setup.config);
    const [firstRefresh] = (await serverTokens(name)).filter((t) => t.kind === "refresh");
    const child = new Child([join(import.meta.dir, "rotate-child.ts"), setup.config]);
    await child.waitFor(/^rotated$/m);
    child.proc.kill("SIGKILL");
    await child.exit();
    const refreshTokens = (await serverTokens(name)).filter((t) => t.kind === "refresh");
    expect(refreshTokens.length).toBe(2);
    expect(refreshTokens.find((t) => t.value === firstRefresh!.value)!.revoked).toBe(true); // the old one is dead
    const { credentials: c } = credentials(setup.config);
    // The access token that came with the rotation is cached; forcing a refresh needs the new refresh token.
    const cached = await oauthToken(c);
    c.reportRejected("main", cached);
    const next = await oauthToken(c);
    expect(next).not.toBe(cached);
    expect(await tokenCount(name, "refresh_token")).toBe(2);
  });

  test("revocation: needs re-authorization, one audit row however many ask; login fixes it", async () => {
    const name = await user();
    const setup = oauthConfig(name);
    dirs.push(setup.dir);
    await login(setup.config);
    const audit = AuditLog.open(join(setup.dir, "audit.db"));
    open.push({ close: () => void audit.close() });
    const { credentials: c, store } = credentials(setup.config, audit);
    const token = await oauthToken(c);
    await control("revoke", { user: name });
    c.reportRejected("main", token);
    const results = await Promise.allSettled(Array.from({ length: 10 }, () => oauthToken(c)));
    for (const r of results) {
      expect(r.status).toBe("rejected");
      const error = (r as PromiseRejectedResult).reason as Error;
      expect(error).toBeInstanceOf(AccountNeedsReauthorization);
      expect(error.message).toContain("mailgator account login main");
      expect(error.message).not.toContain(token);
    }
    await expect(oauthToken(c)).rejects.toBeInstanceOf(AccountNeedsReauthorization);
    expect(await tokenCount(name, "refresh_token")).toBe(1);
    await audit.flush();
    const rows = audit.query({ protocol: "oauth2" });
    expect(rows.length).toBe(1);
    expect(rows[0]!).toMatchObject({ decision: "error", command: "oauth-refresh", target: "main" });
    expect(readStatus(store, "main")!.state).toBe("needs-reauthorization");
    const shown = cli(["account", "status", "-c", setup.config]);
    expect(shown.stdout).toContain("NEEDS RE-AUTHORIZATION");
    expect(shown.stdout).toContain("invalid_grant");
    await login(setup.config);
    expect(await oauthToken(c)).not.toBe(token);
    expect(readStatus(store, "main")!.state).toBe("ok");
  });

  for (const mode of ["status", "close"] as const) {
    const what = mode === "status" ? "answering 503" : "closing the connection";
    test(`token endpoint ${what}: retried with backoff, token kept, works again after`, async () => {
      const name = await user();
      const setup = oauthConfig(name);
      dirs.push(setup.dir);
      await login(setup.config);
      const { credentials: c, store } = credentials(setup.config);
      const token = await oauthToken(c);
      const before = readTokens(store, "main")!;
      await control("fail", { user: name, mode, status: "503" });
      c.reportRejected("main", token);
      await expect(oauthToken(c)).rejects.toBeInstanceOf(AccountTemporarilyUnavailable);
      const attempts = await tokenCount(name, "refresh_token");
      expect(attempts).toBe(1);
      // Within the backoff nothing is sent.
      await expect(oauthToken(c)).rejects.toBeInstanceOf(AccountTemporarilyUnavailable);
      expect(await tokenCount(name, "refresh_token")).toBe(1);
      expect(readTokens(store, "main")!.refreshToken).toBe(before.refreshToken);
      expect(readStatus(store, "main")!.state).toBe("retrying");
      expect(cli(["account", "status", "-c", setup.config]).stdout).toContain("last error");
      await control("fail", { user: name, mode: "off" });
      await Bun.sleep(1_100); // BACKOFF_INITIAL_MS
      const after = await oauthToken(c);
      expect(after).not.toBe(token);
      expect(readTokens(store, "main")!.refreshToken).toBe(before.refreshToken);
      expect(readStatus(store, "main")!.state).toBe("ok");
    });
  }
});

test("the compiled binary logs in (oauth4webapi inside it) and reports status", async () => {
  const binDir = mkdtempSync(join(tmpdir(), "mg-bin-"));
  binDirs.push(binDir);
  // As `npm run build` makes it, alone in a folder, with no Bun on PATH (README "Two commands").
  const out = join(buildAlone(binDir), "mailgator");
  const setup = oauthConfig(await user());
  dirs.push(setup.dir);
  const child = new Child(["account", "login", "main", "-c", setup.config], ALONE_ENV, out);
  const [url] = await child.waitFor(/http:\/\/127\.0\.0\.1:\d+\/authorize\?\S+/);
  expect((await fetch(url!)).status).toBe(200);
  expect(await child.exit()).toBe(0);
  const status = Bun.spawnSync([out, "account", "status", "-c", setup.config, "--json"], { env: ALONE_ENV });
  expect(status.exitCode).toBe(0);
  expect(JSON.parse(status.stdout.toString())[0]).toMatchObject({ account: "main", state: "ok" });
});

describe("secrets at rest", () => {
  test("a wrong or missing key is a clear startup error, never a silent re-login", async () => {
    const setup = oauthConfig(await user());
    dirs.push(setup.dir);
    await login(setup.config);
    const wrong = Buffer.alloc(32, 7).toString("base64");
    const serve = (env: Record<string, string> = {}) => cli(["serve", "-c", setup.config], env);
    let run = serve({ MAILGATOR_SECRETS_KEY: wrong });
    expect(run.code).toBe(1);
    expect(run.stderr).toContain("is not the one that sealed");
    const keyFile = join(setup.dir, "mailgator-secrets.key");
    renameSync(keyFile, `${keyFile}.away`);
    run = serve();
    expect(run.code).toBe(1);
    expect(run.stderr).toContain("is missing");
    expect(existsSync(keyFile)).toBe(false); // no new key was made
    run = cli(["account", "status", "-c", setup.config]);
    expect(run.code).toBe(1);
    renameSync(`${keyFile}.away`, keyFile);
    expect(cli(["account", "status", "-c", setup.config]).stdout).toContain("state: ok");
  });

  test("no token the server issued appears in clear in the state database, its -wal/-shm or the key file", async () => {
    expect(dirs.length).toBeGreaterThan(5);
    const tokens = (await Promise.all([...users, oauthServer().user.user].map(serverTokens))).flat();
    expect(tokens.length).toBeGreaterThan(20);
    let files = 0;
    for (const dir of dirs) {
      for (const name of [
        "mailgator-state.db",
        "mailgator-state.db-wal",
        "mailgator-state.db-shm",
        "mailgator-secrets.key",
      ]) {
        const path = join(dir, name);
        if (!existsSync(path)) continue;
        files++;
        expect(statSync(path).mode & 0o777).toBe(0o600);
        const bytes = readFileSync(path);
        for (const t of tokens) expect(bytes.includes(t.value)).toBe(false);
      }
    }
    expect(files).toBeGreaterThan(dirs.length * 2);
  });
});
