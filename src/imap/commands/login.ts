/**
 * LOGIN (RFC 3501 §6.2.3), AUTHENTICATE PLAIN (RFC 4616, with SASL-IR, RFC 4959) and STARTTLS (§6.2.1): an agent
 * token (vault mode) or the upstream login itself (pass-through) checked, the upstream session opened and logged in,
 * the login audited durably before the session is logged in (docs/imap.md "Audit before data"), and OAuth2
 * accounts logged in with their access token (docs/imap.md "OAuth2 accounts").
 */

import { accountLoginKey } from "../../accounts/identity.ts";
import {
  type AccountCredentials,
  AccountNeedsReauthorization,
  AccountTemporarilyUnavailable,
} from "../../accounts/index.ts";
import { refusalKey } from "../../accounts/refusals.ts";
import { countLimitRefusal } from "../../admin/metrics.ts";
import { cutText, MAX_ROW_LOGIN_NAME } from "../../audit/row.ts";
import { ownEntry } from "../../config/names.ts";
import { lockoutName, overlongCredentials, SessionCounter, UpstreamError } from "../../net/index.ts";
import { type MechanismSetting, saslText } from "../../net/sasl.ts";
import { checkAgentLogin } from "../../vault/login.ts";
import { recordedLoginName } from "../../vault/token.ts";
import { deadFolderRule } from "../folders.ts";
import { Refusal } from "../refusal.ts";
import type { UpstreamSession } from "../upstream.ts";
import { parseAuthenticateLine } from "../wire/index.ts";
import type { CommandOf, LoginSession } from "./context.ts";

export async function startTls(s: LoginSession, cmd: CommandOf<"STARTTLS">): Promise<void> {
  const identity = s.ctx.identity;
  if (s.ctx.listenTls !== "starttls" || s.conn.secure || identity === null) {
    throw new Refusal("BAD", null, "STARTTLS is not available");
  }
  s.tagged(cmd.tag, "OK", null, "Begin TLS negotiation now");
  s.flush();
  await s.upgradeToTls(identity);
}

export async function login(s: LoginSession, cmd: CommandOf<"LOGIN">): Promise<void> {
  return loginAs(s, cmd.tag, "LOGIN", cmd.username, cmd.password);
}

export async function authenticate(s: LoginSession, cmd: CommandOf<"AUTHENTICATE">): Promise<void> {
  const { tag, mechanism } = cmd;
  const initial = cmd.initialResponse;
  if (mechanism !== "PLAIN") throw new Refusal("NO", "CANNOT", "Only AUTHENTICATE PLAIN is supported");
  let data = initial;
  // AUTH= is not offered before STARTTLS (RFC 9051 §6.2.2): refused before the `+`, so that the client never sends
  // its credential in clear. With an initial response it has already crossed: loginAs refuses that one.
  if (data === null && beforeStartTls(s))
    refuseBeforeStartTls(s, "AUTHENTICATE", "refused before the credential was sent");
  if (data === null) {
    s.sendText("+ ");
    s.flush();
    s.expectRawLine();
    const ev = await s.nextEvent();
    if (ev === null) return;
    if (ev.kind !== "line") throw new Refusal("BAD", null, "Expected a SASL response");
    const line = parseAuthenticateLine(ev.line);
    if (!line.ok) throw new Refusal("BAD", null, "Invalid SASL response");
    if (line.value.cancel) throw new Refusal("BAD", null, "AUTHENTICATE cancelled");
    data = line.value.data;
  }
  // RFC 4616: [authzid] NUL authcid NUL passwd, in UTF-8. Other bytes are refused as LOGIN refuses them, not read as
  // U+FFFD: the name and password going upstream are then exactly the agent's.
  const text = saslText(data);
  if (text === null) return s.loginFailed(tag, "AUTHENTICATE", null, "malformed PLAIN response: not valid UTF-8");
  const parts = text.split("\0");
  if (parts.length !== 3 || (parts[0] !== "" && parts[0] !== parts[1])) {
    // The name is recorded only when the three fields are there: in `name NUL password` (the leading NUL left out)
    // the second field is the password, and with any other count no field is known to be the name. A password is
    // never written to the audit log or the log (docs/audit.md "What is never in it").
    return s.loginFailed(
      tag,
      "AUTHENTICATE",
      parts.length === 3 ? parts[1]! : null,
      "malformed PLAIN response or a different authorization identity",
    );
  }
  return loginAs(s, tag, "AUTHENTICATE", parts[1]!, parts[2]!);
}

/** A listener that requires STARTTLS, before the handshake. */
function beforeStartTls(s: LoginSession): boolean {
  return s.ctx.listenTls === "starttls" && !s.conn.secure;
}

/**
 * A synchronizing literal of a LOGIN before STARTTLS (its user name or password): true when it must be refused before
 * its `+`, as AUTHENTICATE is before its `+`, so that the proxy never asks for the credential in clear. The row is
 * written here; the caller refuses the literal and answers `NO [PRIVACYREQUIRED]`. A `{n+}` literal is on its way
 * anyway: it is read, and the LOGIN refused as one that carried a credential in clear (`loginAs`).
 */
export function refuseLoginLiteralBeforeStartTls(s: LoginSession, nonSync: boolean): boolean {
  if (nonSync || !beforeStartTls(s)) return false;
  recordBeforeStartTls(s, "LOGIN", "refused before the credential was sent");
  return true;
}

/** `NO [PRIVACYREQUIRED]` for a login before STARTTLS, with its row (a refusal, docs/audit.md). */
function refuseBeforeStartTls(s: LoginSession, command: string, why: string): never {
  recordBeforeStartTls(s, command, why);
  throw new Refusal("NO", "PRIVACYREQUIRED", "Use STARTTLS first");
}

function recordBeforeStartTls(s: LoginSession, command: string, why: string): void {
  s.auditRow({
    command,
    operation: null,
    folder: null,
    target: null,
    decision: "deny",
    rule: null,
    ruleIndex: null,
    reason: `${command} before STARTTLS, which this listener requires; ${why}`,
  });
}

/** The reply to an agent whose account's login the upstream server refused (or refused just now). */
const ACCOUNT_REFUSED = "The upstream server refused the account's login; try again later";
/** The reply to an agent whose OAuth2 account has no access token the upstream server takes now (docs/imap.md). */
const OAUTH_UNAVAILABLE = "Upstream login temporarily unavailable; try again later";

async function loginAs(
  s: LoginSession,
  tag: string,
  command: string,
  username: string,
  password: string,
): Promise<void> {
  // The credential crossed the wire in clear, which the owner should hear of (never what it was).
  if (beforeStartTls(s)) refuseBeforeStartTls(s, command, "it carried a credential in clear");
  // A login that could not be audited is refused anyway (below): no upstream login for nothing.
  s.requireAudit();
  // Locked out: refused before the credentials are checked, a correct login included (src/net/lockout.ts).
  const lock = s.ctx.lockout.locked(s.conn.remoteAddress, lockoutName(s.ctx.config.agents, username));
  if (lock !== null) return s.loginLocked(tag, command, username, lock);
  const overlong = overlongCredentials(username, password);
  if (overlong !== null) return s.loginFailed(tag, command, username, overlong);
  const { config, generation } = s.ctx;
  let upstreamUser = username;
  let loginUpstream = (up: UpstreamSession) => up.login(username, password);
  let agent: string | null = null;
  /** The agent's account (vault mode): an upstream refusal is then the account's, not the agent's (openAndLogin). */
  let vaultAccount: string | null = null;
  /**
   * The account's key in `accountRefusals`: its refused login (a password, or a fresh access token) is not tried
   * again for a while; `reply`, what its agents are told meanwhile (the words of the refusal itself).
   */
  let refusal: { readonly key: string; readonly account: string; readonly reply: string } | null = null;
  /** Pass-through logins are never kept: upstream's check of the password is the login itself. */
  let poolKey: string | null = null;
  if (config.agents.length > 0) {
    const checked = checkAgentLogin(config.agents, username, password, s.conn.remoteAddress);
    if (!checked.ok) return s.loginFailed(tag, command, username, checked.reason);
    const found = checked.agent;
    const account = ownEntry(config.accounts, found.account);
    if (account === undefined)
      return s.loginFailed(tag, command, username, `account ${found.account} is not configured`);
    upstreamUser = account.username;
    if (account.auth === "oauth2") {
      const setting = account.oauth2.saslMechanism;
      loginUpstream = (up) => oauthLogin(s.ctx.credentials, account.name, up, setting);
      refusal = { key: refusalKey(s.ctx.upstream, account), account: account.name, reply: OAUTH_UNAVAILABLE };
    } else {
      const secret = account.password;
      loginUpstream = (up) => up.login(account.username, secret.reveal());
      // Password accounts only: an OAuth2 account logs in afresh each time, so that a grant revoked or in need of
      // its owner shows at the next login (docs/imap.md "Upstream sessions kept for the next login").
      poolKey = s.ctx.upstreamPool.keyOf(s.ctx.upstream, accountLoginKey(account));
      refusal = { key: refusalKey(s.ctx.upstream, account), account: account.name, reply: ACCOUNT_REFUSED };
    }
    agent = found.name;
    vaultAccount = account.name;
    // Known before going upstream: an agent at its limit costs the upstream nothing.
    if (s.ctx.perAgent.count(SessionCounter.key(agent, upstreamUser)) >= s.ctx.perAgent.limit)
      return s.overSessionLimit(command, username, true);
  }
  // After every await below the agent may have gone: what was opened is closed (shutdown closes what it finds
  // in #upstreams; each step checks #closed too), and nothing is attached to a dead session.
  const kept = poolKey === null ? null : s.ctx.upstreamPool.take(poolKey);
  let up: UpstreamSession;
  let delimiter: string | null;
  if (kept !== null) {
    // Logged in already, unselected, its delimiter known: taken over as it is (src/imap/upstream-pool.ts).
    up = kept.up;
    delimiter = kept.delimiter;
    s.adoptUpstream(up);
    if (s.closed) return;
    if (!s.takePlace(SessionCounter.key(agent, upstreamUser))) {
      up.close();
      countLimitRefusal("imap", "max_sessions_per_agent");
      return s.overSessionLimit(command, username, agent !== null);
    }
  } else {
    // The account's login was refused upstream moments ago: not tried again yet (src/accounts/refusals.ts).
    const held = refusal === null ? null : s.ctx.accountRefusals.notTried(refusal.key, refusal.account);
    if (held !== null) {
      loginError(s, command, username, `upstream ${held}`);
      throw new Refusal("NO", "UNAVAILABLE", refusal!.reply);
    }
    const opened = await openAndLogin(
      s,
      tag,
      command,
      username,
      agent,
      vaultAccount,
      refusal,
      upstreamUser,
      loginUpstream,
    );
    if (opened === null) return;
    ({ up, delimiter } = opened);
  }
  // A deny or ask rule whose folder glob holds the server's delimiter never matches: not served (fail closed).
  const dead = deadFolderRule(config.rules, delimiter);
  if (dead !== null) {
    s.dropPlace();
    up.close();
    s.log.error(`login refused: ${dead.reason}`);
    loginError(s, command, username, `login refused: ${dead.reason}`, dead);
    throw new Refusal("NO", "UNAVAILABLE", "The proxy's rules do not fit this server's folder names; see its log");
  }
  // The login's row is on disk before the session is logged in (docs/imap.md "Audit before data"): if it cannot
  // be written, the agent gets NO [UNAVAILABLE], stays unauthenticated, and the upstream login is closed.
  s.setUser(agent ?? username);
  try {
    await s.auditDurable({
      command,
      operation: null,
      folder: null,
      target: null,
      decision: "allow",
      rule: null,
      ruleIndex: null,
      reason: "logged in",
      ...(kept === null ? {} : { detail: { upstream: "kept session" } }),
    });
  } catch (error) {
    s.setUser(null);
    s.dropPlace();
    up.close();
    throw error;
  }
  if (s.closed) return up.close();
  s.loggedIn({ tag, up, agent, upstreamUser, loginUpstream, generation, delimiter, config, poolKey });
}

/** A login's `error` row: not the agent's failure, but why it is not served (`rule`: the rule that is why). */
function loginError(
  s: LoginSession,
  command: string,
  username: string,
  reason: string,
  rule: { readonly name: string; readonly index: number } | null = null,
): void {
  s.auditRow({
    command,
    operation: null,
    folder: null,
    target: username,
    decision: "error",
    rule: rule?.name ?? null,
    ruleIndex: rule?.index ?? null,
    reason,
  });
}

/** The upstream refused a fresh access token too: a temporary failure for the agent (docs/imap.md). */
class OAuthRefused extends Error {
  override name = "OAuthRefused";
}

/**
 * Logs `up` in as an OAuth2 account (docs/imap.md "OAuth2 accounts"): with the current access token, and when the
 * server refuses it, once more with a fresh one (the refused token is reported, so the next one is new). Resolves
 * true; throws AccountNeedsReauthorization, AccountTemporarilyUnavailable, OAuthRefused or UpstreamError. Never
 * false: a refused token is not the agent's wrong password.
 */
async function oauthLogin(
  credentials: AccountCredentials,
  account: string,
  up: UpstreamSession,
  setting: MechanismSetting,
): Promise<boolean> {
  const first = await credentials.credentialFor(account);
  if (first.kind !== "oauth2") throw new UpstreamError(`account ${account}: expected an OAuth2 credential`);
  if (await up.loginOAuth(first.username, first.accessToken, setting)) return true;
  credentials.reportRejected(account, first.accessToken);
  const second = await credentials.credentialFor(account);
  if (second.kind !== "oauth2") throw new UpstreamError(`account ${account}: expected an OAuth2 credential`);
  if (second.accessToken !== first.accessToken && (await up.loginOAuth(second.username, second.accessToken, setting)))
    return true;
  throw new OAuthRefused(`account ${account}: the upstream server refused a fresh access token`);
}

/**
 * Opens an upstream session and logs it in, takes the agent's place under `max_sessions_per_agent`, and learns the
 * hierarchy delimiter. Null when the login was answered here (refused, over the limit) or the agent left.
 */
async function openAndLogin(
  s: LoginSession,
  tag: string,
  command: string,
  username: string,
  agent: string | null,
  vaultAccount: string | null,
  refusal: { readonly key: string } | null,
  upstreamUser: string,
  loginUpstream: (up: UpstreamSession) => Promise<boolean>,
): Promise<{ up: UpstreamSession; delimiter: string | null } | null> {
  const upstreamFailed = (reason: string, target: string | null = null): void => {
    s.auditRow({
      command,
      operation: null,
      folder: null,
      target,
      decision: "error",
      rule: null,
      ruleIndex: null,
      reason,
    });
  };
  let up: UpstreamSession;
  try {
    up = await s.openUpstream();
  } catch (error) {
    if (s.closed) return notChecked(s, command, username);
    const reason = (error as Error).message;
    s.log.warn(`session ${s.id}: ${reason}`);
    upstreamFailed(reason);
    throw new Refusal("NO", "UNAVAILABLE", "Upstream server unavailable");
  }
  if (s.closed) {
    up.close();
    return notChecked(s, command, username);
  }
  // Pass-through: upstream's answer is the login's verdict, awaited even if the agent leaves meanwhile (its row and its
  // log line: docs/audit.md "What a row records"). Vault mode decided the agent's login before (its token), and the
  // upstream login is the account's: it ends with the session. A pass-through login whose agent leaves before the
  // answer is counted as a failure toward the lock-out at once, taken back if upstream accepts it (docs/config.md "Who
  // connects"): a hang-up frees the agent's connection, and guesses abandoned one after another would otherwise all be
  // under way upstream, past `max_connections_per_ip`, before the first answer counted one.
  let counted = false;
  if (vaultAccount === null)
    s.checkingLogin(up, () => {
      counted = true;
      s.countFailedLogin(command, username);
    });
  let ok: boolean;
  try {
    try {
      ok = await loginUpstream(up);
    } catch (error) {
      up.close();
      if (s.closed) {
        const cause = s.loginCheckCut ?? (error as Error).message;
        const why = `${ended(s)}, and then the check failed (${cause})`;
        // Fail closed: an answer that never came may have been a refusal (counted at the hang-up, or now when the
        // proxy's stopping cut it).
        if (vaultAccount === null)
          await s.loginFailed(tag, command, username, `${why}: not known, counted as refused`, counted);
        else upstreamFailed(`login not completed: ${why}`, recordedTarget(username));
        return null;
      }
      upstreamFailed((error as Error).message);
      // docs/imap.md "OAuth2 accounts": the agent learns that the account needs its owner, or to come back later;
      // never anything of the token exchange.
      if (error instanceof AccountNeedsReauthorization)
        throw new Refusal(
          "NO",
          "UNAVAILABLE",
          `Account ${error.account} needs re-authorization by its owner (mailgator account login ${error.account})`,
        );
      // A fresh token refused too: the account is not tried again for a while (src/accounts/refusals.ts), so that
      // an agent retrying in a loop costs neither a token request nor two failed upstream logins each time.
      if (error instanceof OAuthRefused && refusal !== null) s.ctx.accountRefusals.refused(refusal.key);
      if (error instanceof AccountTemporarilyUnavailable || error instanceof OAuthRefused)
        throw new Refusal("NO", "UNAVAILABLE", OAUTH_UNAVAILABLE);
      throw new Refusal("NO", "UNAVAILABLE", "Upstream server unavailable");
    }
    if (ok && s.closed) {
      up.close();
      return acceptedUnserved(s, command, username, agent, counted);
    }
    if (!ok) {
      up.close();
      if (vaultAccount !== null) {
        // Vault mode: the agent's token was right, so nothing was guessed; the upstream refused the account's own
        // credentials (changed upstream, a server-side limit). Not a failed login of the agent: not slowed, not
        // counted toward the lock-out of its address, which would shut every agent there out (docs/config.md
        // "Who connects"), as for an OAuth2 account. RFC 5530 UNAVAILABLE: the agent can do nothing but try again
        // later.
        const reason = `upstream login refused: the upstream server refused the credentials of account ${vaultAccount}`;
        s.log.warn(`session ${s.id}: agent ${agent}: ${reason}`);
        upstreamFailed(reason, username);
        if (refusal !== null) s.ctx.accountRefusals.refused(refusal.key);
        throw new Refusal("NO", "UNAVAILABLE", ACCOUNT_REFUSED);
      }
      // A refusal after the agent left has its row and log line all the same (counted at the hang-up).
      const after = s.closed ? `; ${ended(s)}` : "";
      await s.loginFailed(tag, command, username, `the upstream server refused the credentials${after}`, counted);
      return null;
    }
  } finally {
    s.loginChecked();
  }
  // Counted once the login is known to be good (pass-through: per upstream login name).
  if (!s.takePlace(SessionCounter.key(agent, upstreamUser))) {
    up.close();
    if (s.closed) return acceptedUnserved(s, command, username, agent, counted);
    countLimitRefusal("imap", "max_sessions_per_agent");
    s.overSessionLimit(command, username, agent !== null);
    return null;
  }
  // The delimiter maps every name onto the rules: without upstream's own answer, no guess (a wrong one would let
  // `Secret.Sub` past a rule on `Secret/**`); the session ends instead.
  let delimiter: string | null | undefined;
  let listed: Awaited<ReturnType<UpstreamSession["run"]>>;
  try {
    listed = await up.run({ name: "LIST", reference: "", pattern: "", selectOptions: [], returnOptions: [] }, (r) => {
      if (r.type === "LIST") delimiter = r.delimiter;
    });
  } catch (error) {
    s.dropPlace();
    up.close();
    if (s.closed) return acceptedUnserved(s, command, username, agent, counted);
    throw error;
  }
  if (s.closed) {
    up.close();
    return acceptedUnserved(s, command, username, agent, counted);
  }
  if (listed.status !== "OK" || delimiter === undefined) {
    s.dropPlace();
    up.close();
    throw new UpstreamError("the upstream server did not tell its hierarchy delimiter");
  }
  return { up, delimiter: delimiter ?? null };
}

/** Why a login was left without its answer: how its session ended (docs/audit.md "What a row records"). */
function ended(s: LoginSession): string {
  return `the session ended before upstream answered (${s.endReason})`;
}

/** A login name as the rows of a login record it (docs/config.md "Who connects"). */
function recordedTarget(username: string): string {
  return cutText(recordedLoginName(username), MAX_ROW_LOGIN_NAME);
}

/**
 * The row of a login whose session ended before its upstream connection was open: nothing was sent upstream, so
 * nothing was checked, nor guessed (not counted toward the lock-out).
 */
function notChecked(s: LoginSession, command: string, username: string): null {
  s.auditRow({
    command,
    operation: null,
    folder: null,
    target: recordedTarget(username),
    decision: "error",
    rule: null,
    ruleIndex: null,
    reason:
      `login not checked: the session ended before the upstream connection was open (${s.endReason}); ` +
      "nothing was sent upstream",
  });
  return null;
}

/**
 * The row of a login upstream accepted after its session had ended: allowed, and never served (the upstream
 * connection is closed). An `allow` row that cannot be queued is logged: nobody is left to refuse.
 */
function acceptedUnserved(
  s: LoginSession,
  command: string,
  username: string,
  agent: string | null,
  counted = false,
): null {
  s.dropPlace();
  // Counted as a failure at the hang-up, before the verdict: upstream accepted it, so it is taken back.
  if (counted) s.withdrawFailedLogin(username);
  s.setUser(agent ?? username);
  try {
    s.auditRow({
      command,
      operation: null,
      folder: null,
      target: null,
      decision: "allow",
      rule: null,
      ruleIndex: null,
      reason: `logged in upstream, not served: ${ended(s)}`,
    });
  } catch (error) {
    s.log.error(`session ${s.id}: audit row lost: ${(error as Error).message}`);
  }
  return null;
}
