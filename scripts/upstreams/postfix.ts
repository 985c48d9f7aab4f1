/**
 * Postfix from a private config directory: loopback SMTP (plain with STARTTLS, implicit TLS, and
 * plain without 8BITMIME), relay without AUTH from 127.0.0.0/8, optional AUTH through Dovecot's SASL socket.
 * Delivery: `local@mailgator.test` goes over LMTP to Dovecot, which saves it in that user's
 * Maildir (users come and go with Dovecot's passwd-file, so Postfix needs no table change and
 * no reload; the `virtual` transport would need one, as it refuses regexp substitution in
 * virtual_mailbox_maps). Every other address goes by the `virtual` transport into one sink
 * Maildir, one file per envelope recipient, with X-Original-To and Delivered-To.
 * Recipient-name hooks answer 550 / 451 at RCPT TO.
 */
import { chownSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { LMTP_SOCKET, logTail, SASL_SOCKET } from "./dovecot.ts";
import type { Layout } from "./layout.ts";
import { MAIL_UID, USER_DOMAIN } from "./layout.ts";
import { startDaemon } from "./processes.ts";
import type { TlsFiles } from "./tls.ts";

/** Local-part prefixes of the RCPT TO hooks (any domain): `reject…@x` → 550, `tempfail…@x` → 451. */
export const HOOKS = { reject: "reject", tempfail: "tempfail" } as const;

const SINK_DIR = "_sink/";

export function mainCf(paths: Layout, tls: TlsFiles): string {
  const dir = paths.postfixConf;
  return `# Written by scripts/upstreams/start.ts; rewritten at every start.
compatibility_level = 3.6
queue_directory = ${paths.postfixQueue}
data_directory = ${paths.postfixData}
mail_owner = postfix
setgid_group = postdrop
# There is no syslog here: without maillog_file, errors are invisible.
maillog_file = ${paths.postfixLog}
maillog_file_prefixes = ${paths.dir}
syslog_name = mailgator-upstream
myhostname = upstream.${USER_DOMAIN}
mydomain = ${USER_DOMAIN}
myorigin = $myhostname
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
mydestination =
relay_domains =
relayhost =
local_recipient_maps =
alias_maps =
alias_database =
biff = no
append_dot_mydomain = no
smtpd_banner = $myhostname ESMTP Mailgator test upstream (Postfix)

# Every domain is delivered here: nothing ever leaves the machine. Test users' domain goes to
# Dovecot over LMTP; the virtual transport puts every other recipient into the sink.
virtual_mailbox_domains = static:all
transport_maps = texthash:${join(dir, "transport")}
virtual_mailbox_base = ${paths.maildirRoot}
virtual_mailbox_maps = static:${SINK_DIR}
virtual_uid_maps = static:${MAIL_UID}
virtual_gid_maps = static:${MAIL_UID}
virtual_minimum_uid = ${MAIL_UID}
virtual_mailbox_limit = 0
message_size_limit = 52428800
recipient_delimiter =

# Relay from loopback without AUTH; AUTH PLAIN/LOGIN (Dovecot's passwd-file) is offered too.
smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination
smtpd_recipient_restrictions = check_recipient_access regexp:${join(dir, "recipient-hooks")}, permit
access_map_reject_code = 550
access_map_defer_code = 451
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = ${join(paths.dovecotBaseDir, SASL_SOCKET)}
smtpd_tls_auth_only = no
smtpd_tls_security_level = may
smtpd_tls_cert_file = ${tls.certFile}
smtpd_tls_key_file = ${tls.keyFile}
smtpd_tls_loglevel = 0
smtp_tls_security_level = none

# Fast enough for tests and load: retry within a second, no penalties for errors.
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
in_flow_delay = 0
smtpd_error_sleep_time = 0
smtpd_soft_error_limit = 1000
smtpd_hard_error_limit = 1000
smtpd_junk_command_limit = 100000
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
smtpd_client_message_rate_limit = 0
smtpd_client_recipient_rate_limit = 0
smtpd_recipient_limit = 10000
default_process_limit = 200
`;
}

/** The SMTP listeners of master.cf: `smtp7bit` is `smtp` without the 8BITMIME keyword in its EHLO (RFC 6152). */
export interface PostfixPorts {
  readonly smtp: number;
  readonly smtps: number;
  readonly smtp7bit: number;
}

export function masterCf(ports: PostfixPorts): string {
  // Debian's default chroots services; every chroot column here is "n".
  return `# service type  private unpriv  chroot  wakeup  maxproc command + args
127.0.0.1:${ports.smtp} inet n - n - - smtpd
127.0.0.1:${ports.smtps} inet n - n - - smtpd -o smtpd_tls_wrappermode=yes
127.0.0.1:${ports.smtp7bit} inet n - n - - smtpd -o smtpd_discard_ehlo_keywords=8bitmime
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
`;
}

export function recipientHooks(): string {
  return `# Test hooks by recipient local part, any domain.
/^${HOOKS.reject}[^@]*@/ 550 5.1.1 Recipient rejected by test hook
/^${HOOKS.tempfail}[^@]*@/ 451 4.3.0 Recipient deferred by test hook
`;
}

export function writePostfixFiles(paths: Layout, tls: TlsFiles, ports: PostfixPorts): void {
  mkdirSync(paths.postfixConf, { recursive: true, mode: 0o755 });
  mkdirSync(paths.postfixQueue, { recursive: true, mode: 0o755 });
  chownSync(paths.postfixQueue, 0, 0);
  mkdirSync(paths.postfixData, { recursive: true, mode: 0o700 });
  const postfixIds = userIds("postfix");
  chownSync(paths.postfixData, postfixIds.uid, postfixIds.gid);
  writeFileSync(join(paths.postfixConf, "main.cf"), mainCf(paths, tls));
  writeFileSync(join(paths.postfixConf, "master.cf"), masterCf(ports));
  writeFileSync(join(paths.postfixConf, "recipient-hooks"), recipientHooks());
  writeFileSync(
    join(paths.postfixConf, "transport"),
    `${USER_DOMAIN} lmtp:unix:${join(paths.dovecotBaseDir, LMTP_SOCKET)}\n`,
  );
}

function userIds(name: string): { uid: number; gid: number } {
  const line = readFileSync("/etc/passwd", "utf8")
    .split("\n")
    .find((entry) => entry.startsWith(`${name}:`));
  const fields = line?.split(":") ?? [];
  const uid = Number(fields[2]);
  const gid = Number(fields[3]);
  if (!Number.isInteger(uid) || !Number.isInteger(gid))
    throw new Error(`upstreams: user ${name} is missing (the ${name} package creates it)`);
  return { uid, gid };
}

/** `postfix start` creates missing queue directories, starts the master and returns its PID. */
export async function startPostfix(paths: Layout): Promise<number> {
  const pidFile = join(paths.postfixQueue, "pid", "master.pid");
  return startDaemon(
    "postfix",
    ["/usr/sbin/postfix", "-c", paths.postfixConf, "start"],
    join(paths.postfixDir, "start.out"),
    pidFile,
    () => logTail(paths.postfixLog),
  );
}
