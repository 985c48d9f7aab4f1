/**
 * The OAuth2 side of the upstreams: the local authorization server's config and process
 * (scripts/upstreams/oauth-server.ts), Dovecot's oauth2 passdb settings pointing at its
 * introspection endpoint, and the OAuth2 user. See docs/upstreams.md "OAuth2".
 */
import { randomBytes } from "node:crypto";
import { chmodSync, chownSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { UpstreamOAuth } from "./description.ts";
import { dovecotGid, logTail } from "./dovecot.ts";
import type { Layout } from "./layout.ts";
import { USER_DOMAIN } from "./layout.ts";
import type { OAuthServerConfig } from "./oauth-server.ts";
import { addUser } from "./users.ts";

/** The client the proxy registers (`client_id`); its secret is made once per runtime folder. */
export const OAUTH_CLIENT_ID = "mailgator-test-client";
/** The resource-server client Dovecot authenticates with at the introspection endpoint. */
export const INTROSPECTION_CLIENT_ID = "dovecot";
/** The Dovecot user tokens are issued for unless a request names another (`login_hint`). */
export const OAUTH_USER = `oauth-user@${USER_DOMAIN}`;

interface Secrets {
  readonly clientSecret: string;
  readonly introspectionSecret: string;
  /** The OAuth user's passwd-file needs a password; nobody is told it (it logs in with tokens). */
  readonly userPassword: string;
}

/** Secrets kept in `<dir>/oauth/secrets.json` (0600), made on first use so restarts keep issued tokens valid. */
function secrets(paths: Layout): Secrets {
  const file = join(paths.oauthDir, "secrets.json");
  if (existsSync(file)) return JSON.parse(readFileSync(file, "utf8")) as Secrets;
  const made: Secrets = {
    clientSecret: randomBytes(24).toString("base64url"),
    introspectionSecret: randomBytes(24).toString("base64url"),
    userPassword: randomBytes(24).toString("base64url"),
  };
  writeFileSync(file, `${JSON.stringify(made, null, 2)}\n`, { mode: 0o600 });
  return made;
}

/**
 * Dovecot's oauth2 passdb settings (doc.dovecot.org, "OAuth2" authentication database, 2.3):
 * RFC 7662 introspection by POST with the resource server's credentials in the URL (sent as
 * HTTP Basic). The token's `username` must equal the login name; `active` must be true.
 */
export function dovecotOAuthConfig(port: number, secret: string): string {
  return `# Written by scripts/upstreams/start.ts; rewritten at every start.
introspection_mode = post
introspection_url = http://${INTROSPECTION_CLIENT_ID}:${secret}@127.0.0.1:${port}/introspect
force_introspection = yes
username_attribute = username
active_attribute = active
active_value = true
timeout_msecs = 5000
`;
}

export interface OAuthFiles {
  readonly serverConfig: string;
  readonly description: UpstreamOAuth;
}

/**
 * Writes the server's config, Dovecot's oauth2 passdb file (readable by Dovecot's auth process
 * only: it holds the introspection secret) and the OAuth user; returns what upstreams.json says.
 */
export function writeOAuthFiles(paths: Layout, port: number): OAuthFiles {
  mkdirSync(paths.oauthDir, { recursive: true, mode: 0o700 });
  chmodSync(paths.oauthDir, 0o700);
  const keys = secrets(paths);
  const config: OAuthServerConfig = {
    port,
    client: { id: OAUTH_CLIENT_ID, secret: keys.clientSecret },
    introspectionClient: { id: INTROSPECTION_CLIENT_ID, secret: keys.introspectionSecret },
    defaultUser: OAUTH_USER,
    stateFile: paths.oauthState,
    pidFile: paths.oauthPid,
  };
  writeFileSync(paths.oauthConfig, `${JSON.stringify(config, null, 2)}\n`, { mode: 0o600 });
  writeFileSync(paths.dovecotOAuthConf, dovecotOAuthConfig(port, keys.introspectionSecret), { mode: 0o640 });
  chownSync(paths.dovecotOAuthConf, 0, dovecotGid());
  chmodSync(paths.dovecotOAuthConf, 0o640);
  const user = addUser(paths, OAUTH_USER, keys.userPassword);
  const base = `http://127.0.0.1:${port}`;
  return {
    serverConfig: paths.oauthConfig,
    description: {
      issuer: base,
      authorizeUrl: `${base}/authorize`,
      tokenUrl: `${base}/token`,
      deviceUrl: `${base}/device_authorization`,
      introspectUrl: `${base}/introspect`,
      controlUrl: `${base}/control`,
      clientId: OAUTH_CLIENT_ID,
      clientSecret: keys.clientSecret,
      user: { user: user.user, address: user.address, maildir: user.maildir },
      log: paths.oauthLog,
    },
  };
}

/** Starts the server (detached, own session) and returns its PID once it listens. */
export async function startOAuthServer(paths: Layout, configFile: string): Promise<number> {
  writeFileSync(paths.oauthPid, "");
  const child = Bun.spawn([process.execPath, join(import.meta.dir, "oauth-server.ts"), configFile], {
    detached: true,
    stdin: "ignore",
    stdout: Bun.file(paths.oauthLog),
    stderr: Bun.file(paths.oauthLog),
  });
  child.unref();
  const deadline = Date.now() + 5000;
  while (Date.now() < deadline) {
    const pid = Number(readFileSync(paths.oauthPid, "utf8").trim());
    if (pid > 0) return pid;
    if (child.exitCode !== null) break;
    await Bun.sleep(20);
  }
  throw new Error(`upstreams: the OAuth2 authorization server did not start${logTail(paths.oauthLog)}`);
}
