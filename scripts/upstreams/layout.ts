/** Where everything lives inside the runtime folder (default `.run/upstreams/` in the repo). */
import { join, resolve } from "node:path";

/** Uid and gid of every Maildir file; no /etc/passwd entry needed (uid 0 is refused by Dovecot). */
export const MAIL_UID = 5000;
/** Test users are `local@USER_DOMAIN`; Postfix delivers that whole domain into Dovecot Maildirs. */
export const USER_DOMAIN = "mailgator.test";
/** Folders every user has; all but INBOX carry a special-use attribute (RFC 6154). */
export const SPECIAL_FOLDERS = {
  Drafts: "\\Drafts",
  Sent: "\\Sent",
  Trash: "\\Trash",
  Junk: "\\Junk",
  Archive: "\\Archive",
} as const;
export const FOLDERS: readonly string[] = ["INBOX", ...Object.keys(SPECIAL_FOLDERS)];

export interface Layout {
  readonly dir: string;
  readonly descriptionFile: string;
  readonly lockFile: string;
  readonly tlsDir: string;
  readonly dovecotDir: string;
  readonly dovecotConf: string;
  readonly dovecotBaseDir: string;
  readonly dovecotStateDir: string;
  readonly dovecotLog: string;
  readonly usersDir: string;
  readonly postfixDir: string;
  /** Postfix's config_directory: only config files (postfix start checks every file in it). */
  readonly postfixConf: string;
  readonly postfixQueue: string;
  readonly postfixData: string;
  readonly postfixLog: string;
  readonly nginxDir: string;
  readonly nginxConf: string;
  readonly nginxLog: string;
  readonly authHttpLog: string;
  /** The local OAuth2 authorization server: config.json, state.json, server.log, server.pid. */
  readonly oauthDir: string;
  readonly oauthConfig: string;
  readonly oauthState: string;
  readonly oauthLog: string;
  readonly oauthPid: string;
  /** Dovecot's oauth2 passdb settings (the passdb's `args` file). */
  readonly dovecotOAuthConf: string;
  readonly maildirRoot: string;
  readonly sink: string;
}

/** The default runtime folder: `.run/upstreams` at the repository root. */
export function defaultDir(): string {
  return resolve(import.meta.dir, "..", "..", ".run", "upstreams");
}

export function layout(dirArg?: string): Layout {
  const dir = resolve(dirArg ?? defaultDir());
  const dovecotDir = join(dir, "dovecot");
  const postfixDir = join(dir, "postfix");
  const nginxDir = join(dir, "nginx");
  const maildirRoot = join(dir, "mail");
  const oauthDir = join(dir, "oauth");
  return {
    dir,
    descriptionFile: join(dir, "upstreams.json"),
    lockFile: join(dir, "start.lock"),
    tlsDir: join(dir, "tls"),
    dovecotDir,
    dovecotConf: join(dovecotDir, "dovecot.conf"),
    dovecotBaseDir: join(dovecotDir, "run"),
    dovecotStateDir: join(dovecotDir, "state"),
    dovecotLog: join(dovecotDir, "dovecot.log"),
    usersDir: join(dovecotDir, "users"),
    postfixDir,
    postfixConf: join(postfixDir, "conf"),
    postfixQueue: join(postfixDir, "queue"),
    postfixData: join(postfixDir, "data"),
    postfixLog: join(postfixDir, "postfix.log"),
    nginxDir,
    nginxConf: join(nginxDir, "nginx.conf"),
    nginxLog: join(nginxDir, "error.log"),
    authHttpLog: join(nginxDir, "auth-http.log"),
    oauthDir,
    oauthConfig: join(oauthDir, "config.json"),
    oauthState: join(oauthDir, "state.json"),
    oauthLog: join(oauthDir, "server.log"),
    oauthPid: join(oauthDir, "server.pid"),
    dovecotOAuthConf: join(dovecotDir, "oauth2.conf.ext"),
    maildirRoot,
    sink: join(maildirRoot, "_sink"),
  };
}

/** A user's Maildir (Dovecot's `~/Maildir`, Postfix's `<domain>/<local>/Maildir/`). */
export function userMaildir(root: string, address: string): string {
  const [local, domain] = splitAddress(address);
  return join(root, domain, local, "Maildir");
}

export function splitAddress(address: string): [string, string] {
  const at = address.lastIndexOf("@");
  if (at <= 0) throw new Error(`upstreams: "${address}" is not an address`);
  return [address.slice(0, at).toLowerCase(), address.slice(at + 1).toLowerCase()];
}
