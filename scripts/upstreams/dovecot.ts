/**
 * Dovecot from a private config: IMAP on 127.0.0.1 (a plain port offering STARTTLS and an
 * implicit-TLS port), users from a passwd-file, Maildir with special-use folders, and an
 * auth socket Postfix uses for SMTP AUTH. Nothing under /etc is read.
 */
import { chmodSync, chownSync, existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Layout } from "./layout.ts";
import { MAIL_UID, SPECIAL_FOLDERS } from "./layout.ts";
import { startDaemon } from "./processes.ts";
import type { TlsFiles } from "./tls.ts";

/** Socket (in Dovecot's base_dir) that Postfix's smtpd asks to check SMTP AUTH. */
export const SASL_SOCKET = "auth-postfix";
/** Socket (in Dovecot's base_dir) where Postfix delivers test users' mail over LMTP. */
export const LMTP_SOCKET = "lmtp-postfix";

export function dovecotConfig(paths: Layout, tls: TlsFiles, ports: { imap: number; imaps: number }): string {
  const mailboxes = Object.entries(SPECIAL_FOLDERS)
    .map(
      ([name, use]) =>
        // A mailbox block must span lines: on one line Dovecot reports a syntax error.
        `  mailbox ${name} {\n    special_use = ${use}\n    auto = subscribe\n  }`,
    )
    .join("\n");
  return `# Written by scripts/upstreams/start.ts; rewritten at every start.
base_dir = ${paths.dovecotBaseDir}
state_dir = ${paths.dovecotStateDir}
log_path = ${paths.dovecotLog}
instance_name = mailgator-upstream-${ports.imap}
protocols = imap lmtp
listen = 127.0.0.1
shutdown_clients = yes
# Loopback is trusted so that one test's failed login (answered after ~2 s) does not make
# Dovecot delay every later login from 127.0.0.1 (its per-IP auth penalty). Side effect: a
# client here may set its reported address with ID ("x-originating-ip" ...).
login_trusted_networks = 127.0.0.0/8

ssl = yes
ssl_cert = <${tls.certFile}
ssl_key = <${tls.keyFile}
ssl_min_protocol = TLSv1.2

# Test fixtures log in over plain TCP too.
disable_plaintext_auth = no
# XOAUTH2 and OAUTHBEARER (RFC 7628) go to the oauth2 passdb below, PLAIN and LOGIN to the passwd-files.
auth_mechanisms = plain login oauthbearer xoauth2
default_internal_user = dovecot
default_login_user = dovenull
first_valid_uid = ${MAIL_UID}
last_valid_uid = ${MAIL_UID}

# One passwd-file per user, so a user added at run time is found at once, without a reload
# (Dovecot re-reads a changed passwd-file, but checks its mtime at most once a second).
passdb {
  driver = passwd-file
  mechanisms = plain login
  args = scheme=PLAIN username_format=%Lu ${paths.usersDir}/%Lu
}
# Bearer tokens are checked at the local OAuth2 server's introspection endpoint (RFC 7662); the
# user must still exist in the userdb. Settings: ${paths.dovecotOAuthConf}.
passdb {
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = ${paths.dovecotOAuthConf}
}
userdb {
  driver = passwd-file
  args = username_format=%Lu ${paths.usersDir}/%Lu
}

mail_location = maildir:~/Maildir
namespace inbox {
  inbox = yes
  separator = /
${mailboxes}
}

# Load tests open many sessions for one user from one address.
protocol imap {
  mail_max_userip_connections = 1000
}
default_vsz_limit = 1G
default_process_limit = 1100
default_client_limit = 4000
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = ${ports.imap}
  }
  inet_listener imaps {
    address = 127.0.0.1
    port = ${ports.imaps}
    ssl = yes
  }
  service_count = 0
  process_min_avail = 2
  process_limit = 8
  client_limit = 1000
}
service imap {
  process_limit = 1024
}
# Postfix hands test users' mail to Dovecot here; "user+tag@" goes to user's INBOX.
recipient_delimiter = +
lmtp_save_to_detail_mailbox = no
service lmtp {
  user = root
  unix_listener ${LMTP_SOCKET} {
    mode = 0660
    user = postfix
    group = postfix
  }
}
service anvil {
  client_limit = 5000
  # No auth penalty: without this, a failed SMTP AUTH in one test (Postfix asks Dovecot,
  # from 127.0.0.1) would delay every later login in every test by up to 15 s. The auth
  # process cannot open this socket and turns penalties off; failed logins still take ~2 s.
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
service auth {
  client_limit = 5000
  unix_listener ${SASL_SOCKET} {
    mode = 0660
    user = postfix
    group = postfix
  }
}
`;
}

/** Writes the config and makes the users folder; keeps existing users. */
export function writeDovecotFiles(paths: Layout, tls: TlsFiles, ports: { imap: number; imaps: number }): void {
  mkdirSync(paths.dovecotDir, { recursive: true, mode: 0o755 });
  mkdirSync(paths.dovecotStateDir, { recursive: true, mode: 0o755 });
  writeFileSync(paths.dovecotConf, dovecotConfig(paths, tls, ports));
  // Folders made by an earlier version of these scripts had one shared users file here.
  if (existsSync(paths.usersDir) && !statSync(paths.usersDir).isDirectory()) rmSync(paths.usersDir);
  mkdirSync(paths.usersDir, { recursive: true });
  // Dovecot's auth process reads it as group dovecot.
  chownSync(paths.usersDir, 0, dovecotGid());
  chmodSync(paths.usersDir, 0o750);
}

export function dovecotGid(): number {
  const line = readFileSync("/etc/group", "utf8")
    .split("\n")
    .find((entry) => entry.startsWith("dovecot:"));
  const gid = Number(line?.split(":")[2]);
  if (!Number.isInteger(gid))
    throw new Error("upstreams: group dovecot is missing (the dovecot-core package creates it)");
  return gid;
}

/** Starts the master (it daemonizes) and returns its PID from base_dir/master.pid. */
export async function startDovecot(paths: Layout): Promise<number> {
  const pidFile = join(paths.dovecotBaseDir, "master.pid");
  return startDaemon(
    "dovecot",
    ["/usr/sbin/dovecot", "-c", paths.dovecotConf],
    join(paths.dovecotDir, "start.out"),
    pidFile,
    () => logTail(paths.dovecotLog),
  );
}

export function logTail(path: string, lines = 15): string {
  if (!existsSync(path)) return "";
  const tail = readFileSync(path, "utf8").trimEnd().split("\n").slice(-lines).join("\n");
  return `\n--- last lines of ${path} ---\n${tail}`;
}
