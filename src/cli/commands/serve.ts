/**
 * `mailgator serve -c FILE` (and `mailgator --config FILE`): run the proxies until SIGINT/SIGTERM; SIGHUP reloads
 * the config and TLS files (docs/operations.md "Reload").
 */

import { Database } from "bun:sqlite";
import { existsSync, rmSync } from "node:fs";
import { dirname } from "node:path";

import { type AccountCredentials, openAccountCredentials } from "../../accounts/index.ts";
import { auditHealthy, auditRowsQueued, auditRowsWritten, countReload, setHeldApprovals } from "../../admin/metrics.ts";
import { type AdminServer, type HealthReport, registerAdminRoute, startAdmin } from "../../admin/server.ts";
import { Notifier } from "../../approvals/notify.ts";
import { type ApprovalContext, expireDue, recover, withdrawExposedLinks } from "../../approvals/service.ts";
import { type ApprovalRow, ApprovalStore } from "../../approvals/store.ts";
import { type ApprovalPage, approvalPage, MAX_FORM_BYTES } from "../../approvals/web.ts";
import { AuditLog } from "../../audit/index.ts";
import {
  type Config,
  ConfigError,
  type ConfigLocation,
  findConfig,
  formatProblem,
  loadConfig,
} from "../../config/index.ts";
import { startImapProxy } from "../../imap/index.ts";
import { errorMessage, moduleLogger } from "../../log.ts";
import { removeConfigWriteLeftovers } from "../../mcp/admin-edit.ts";
import { LoginLockout, SHUTDOWN_GRACE_MS } from "../../net/index.ts";
import { compilePolicy, type Policy } from "../../policy/index.ts";
import { checkDatabaseFiles } from "../../private-files.ts";
import { openQuotas, type Quotas, type RunningQuotas } from "../../quotas/index.ts";
import {
  emitReload,
  LiveConfig,
  onReload,
  type PreparedReload,
  ReloadPartError,
  type ReloadResult,
  SessionsNotReloaded,
} from "../../runtime/reload.ts";
import {
  claimPidFile,
  pidFileFor,
  releasePidFile,
  removeStateFileLeftovers,
  statusFileFor,
  writeStatusFile,
} from "../../runtime/state-files.ts";
import { startSmtpProxy } from "../../smtp/index.ts";
import { openStateDatabase } from "../../state/database.ts";
import { SealedStore } from "../../state/store.ts";
import { type CommandContext, EXIT_FAILURE, EXIT_OK, parse } from "../args.ts";

export const usage = `Usage: mailgator serve [-c FILE]
       mailgator --config FILE

Starts the IMAP and SMTP listeners the config defines (and the admin
listener, when [admin] is configured) and runs until interrupted (SIGINT or
SIGTERM), then closes them and flushes the audit log.
SIGHUP (or \`mailgator reload\`) re-reads the config and TLS files; a config
that does not load leaves the running one in force.

Options:
  -c, --config FILE        the config file (default: $MAILGATOR_CONFIG, else
                           ./mailgator.toml, else /etc/mailgator/mailgator.toml)
      --log-format FORMAT  pretty (default) or json
  -h, --help               this help`;

export interface ProxyHandle {
  readonly address: { readonly host: string; readonly port: number };
  close(): Promise<void>;
  prepareReload(next: Config): PreparedReload;
}

export interface ProxyDeps {
  readonly config: Config;
  readonly policy: Policy;
  readonly audit: AuditLog;
  /** The upstream credential of each account (vault mode); see src/accounts/index.ts. */
  readonly credentials: AccountCredentials;
  readonly live: LiveConfig;
  /** Where `ask` rules hold messages; null when no rule asks (docs/approvals.md). */
  readonly approvals: ApprovalStore | null;
  /** After the agent has its 250 for a held message: the approvers' notices (src/approvals/notify.ts). */
  readonly onHeld?: (row: ApprovalRow) => void;
  /** `[[quotas]]` counted in the state database (docs/quotas.md). */
  readonly quotas: Quotas;
  /** Failed logins, one count for both listeners (docs/config.md "Who connects"). */
  readonly lockout: LoginLockout;
}

type Starter = (deps: ProxyDeps) => Promise<ProxyHandle>;

/** The proxies this build has; null where the proxy is not there yet. */
export const PROXIES: Readonly<Record<"imap" | "smtp", Starter | null>> = {
  imap: startImapProxy,
  smtp: startSmtpProxy,
};

/** How often held messages past their time are expired (and wiped)... */
export const APPROVAL_EXPIRY_CHECK_MS = 60_000;
/** ...or every `[approvals] timeout` when that is shorter, but not more often than this. */
export const APPROVAL_EXPIRY_CHECK_MIN_MS = 1_000;

/** The expiry check's period: a held message is wiped at most a minute (or its timeout, if shorter) past its time. */
export function approvalExpiryCheckMs(timeoutMs: number): number {
  return Math.max(APPROVAL_EXPIRY_CHECK_MIN_MS, Math.min(APPROVAL_EXPIRY_CHECK_MS, timeoutMs));
}

export async function serve(ctx: CommandContext): Promise<number> {
  // The pid file, once this process holds it, is removed on every way out, a throw included.
  const held: { pidFile: string; text: string }[] = [];
  try {
    return await serveHolding(ctx, held);
  } finally {
    for (const h of held) releasePidFile(h.pidFile, h.text);
  }
}

async function serveHolding(ctx: CommandContext, held: { pidFile: string; text: string }[]): Promise<number> {
  const { values } = parse(
    ctx.argv,
    { config: { type: "string", short: "c" }, "log-format": { type: "string" } },
    usage,
  );
  if (values.help) return (ctx.out(usage), EXIT_OK);
  const log = moduleLogger("serve");
  // SIGHUP's default action ends the process, so its handler goes in before anything else (the config's load
  // included): one that comes while serve starts is applied once the listeners listen, one that comes while it
  // stops is logged and ignored (docs/operations.md "Reload").
  /** Set once the listeners listen: a reload, or (while shutting down) the refusal `mailgator reload` reads. */
  let hup: { reload(): void; refuse(): void } | null = null;
  let pendingHup = false;
  let stopping = false;
  const onHup = (): void => {
    if (stopping) {
      log.warn("SIGHUP while shutting down: not reloaded");
      hup?.refuse();
    } else if (hup === null) pendingHup = true;
    else hup.reload();
  };
  process.on("SIGHUP", onHup);
  const location = findConfig(values.config, ctx.env);
  const config = loadConfig(location, { env: ctx.env });
  for (const w of config.warnings) log.warn(w);
  const policy = compilePolicy(config.rules);
  for (const s of policy.shadowed())
    log.warn(`rule ${s.index + 1} "${s.name}" can never match (rule ${s.byIndex + 1} "${s.by}" decides first)`);

  // The signal handlers go in before anything is opened: a SIGTERM during the start (the start-up check of held
  // messages commits changes whose rows are still queued) or right after a "listening" line must close the proxies
  // and the audit log, not end the process with the default action. One that comes during the start is acted on
  // once the start is done. They stay in for the whole shutdown: a second SIGTERM or SIGINT (a second Ctrl-C, a
  // supervisor that repeats its signal) is logged, not the default action that would end the process before the
  // audit log is closed and lose the rows still queued.
  const stopped = new Promise<void>((resolve) => {
    const stop = (signal: string) => {
      if (stopping) {
        log.warn(`${signal}: already shutting down (the audit log and the state database are closed first)`);
        return;
      }
      log.info(`${signal}: shutting down`);
      stopping = true;
      resolve();
    };
    process.on("SIGINT", () => stop("SIGINT"));
    process.on("SIGTERM", () => stop("SIGTERM"));
  });
  // One serve per folder: a second one with its audit database beside the first's would share its pid file, status
  // file and (by default) state database, and `mailgator reload` for either would signal the other. One serve per
  // state database too, wherever `[state] path` puts it: two sharing one would each refresh the same OAuth2 tokens
  // (rotating the other's refresh token away) and count quotas behind each other's back. Nothing is opened before
  // this (docs/operations.md "One serve per folder").
  const pidFile = pidFileFor(config);
  const statusFile = statusFileFor(config);
  const statePid = `${config.state.path}.pid`;
  const claims = [
    {
      file: pidFile,
      needed: true,
      refusal:
        `its audit database is in ${dirname(pidFile)} too, and two serves cannot share that folder. Give each ` +
        "config its own folder for [audit] path (and for [state] path, which defaults to it)",
    },
    {
      file: statePid,
      // A state database this config does not use yet cannot be shared by it: a folder where the claim cannot be
      // made (read-only, missing) does not stop serve then.
      needed: usesStateDatabase(config),
      refusal:
        `it uses the state database ${config.state.path} too, and two serves cannot share one. Give each config ` +
        "its own [state] path",
    },
  ];
  // What a process killed mid-write left (docs/operations.md "Leftovers"): temporary copies of the pid and status
  // files, and of the config an admin edit was writing. Only files of processes that are gone; never fails the start.
  removeStateFileLeftovers([pidFile, statePid], statusFile);
  removeConfigWriteLeftovers(config.file);
  for (const { file, needed, refusal } of claims) {
    let claim: ReturnType<typeof claimPidFile>;
    try {
      claim = claimPidFile(file, config.file);
    } catch (e) {
      if (!needed) {
        log.warn(`cannot create ${file} (${errorMessage(e)}): not needed while nothing uses the state database`);
        continue;
      }
      log.error(`cannot start: cannot create the pid file ${file}: ${errorMessage(e)}`);
      return EXIT_FAILURE;
    }
    if (!claim.held) {
      const other = claim.config === null ? "" : `, config ${claim.config}`;
      log.error(`cannot start: another mailgator (process ${claim.pid}${other}) holds ${file}: ${refusal}`);
      return EXIT_FAILURE;
    }
    held.push({ pidFile: file, text: claim.text });
  }
  const audit = AuditLog.open(config.audit.path, {
    ...(config.audit.retentionDays ? { retentionDays: config.audit.retentionDays } : {}),
    log: (m, level) => log[level](m),
  });
  log.info(`audit log: ${config.audit.path} (config revision ${config.revision})`);
  let accounts: ReturnType<typeof openAccountCredentials>;
  try {
    // A missing or wrong secrets key is a startup error (docs/accounts.md "What is stored where").
    accounts = openAccountCredentials(config, {
      env: ctx.env,
      audit: (event) => audit.record(event),
      log: moduleLogger("accounts"),
    });
  } catch (e) {
    log.error(`cannot start: ${(e as Error).message}`);
    await audit.close();
    return EXIT_FAILURE;
  }
  let state = accounts.store;
  const unregister: (() => void)[] = [];
  let approvals: ApprovalStore | null = null;
  let expiry: ReturnType<typeof setInterval> | null = null;
  let notifier: Notifier | null = null;
  let approvalsPage: ApprovalPage | null = null;
  /** The approvals whose links a reload may withdraw (withdrawExposedLinks); null when no rule asks. */
  let linkContext: ApprovalContext | null = null;
  // The config in force: what a reload swaps in is what the approvals below and the proxies read.
  const live = new LiveConfig(config, policy);
  // `config` is read at each use: approvers, notices and replays follow a reload (docs/approvals.md).
  const approvalContext = (store: ApprovalStore, onDecided?: ApprovalContext["onDecided"]): ApprovalContext => ({
    get config() {
      return live.config;
    },
    store,
    audit,
    protocol: "smtp",
    credentials: accounts.credentials,
    onDecided,
  });
  /**
   * Held messages looked after from the start: a replay a dead process left half done is marked and never repeated
   * (docs/approvals.md "What is guaranteed"), now and at each check after (a command's replay still running at the
   * start is left to it); what is due expires now and at each check after (each expiry is a row, so the check waits
   * while the audit log cannot be written); `checked` runs after each check.
   */
  const lookAfterHeld = (actx: ApprovalContext, checked: () => void): void => {
    const recoverDead = (): void => {
      for (const row of recover(actx))
        log.warn(`approval ${row.id} was being sent when the process stopped: needs a check (not sent again)`);
    };
    recoverDead();
    const expire = (): void => {
      try {
        recoverDead();
        expireDue(actx);
        checked();
      } catch (e) {
        // A timer's callback must not throw (the process would end on it): the next check tries again.
        log.error(`approvals: expiry check failed: ${errorMessage(e)}`);
      }
    };
    expire();
    expiry = setInterval(expire, approvalExpiryCheckMs(config.approvals.timeoutMs));
  };
  if (config.rules.some((r) => r.action === "ask")) {
    try {
      state ??= SealedStore.open(config.state.path, {
        secretsFile: config.state.secretsFile,
        env: ctx.env,
        create: true,
      });
      approvals = new ApprovalStore(state!);
      // Before any notice goes out or the page answers: a link an agent may read since the last run is withdrawn
      // (docs/approvals.md "Links"). Not knowing whether to is a reason not to start.
      withdrawExposedLinks(approvalContext(approvals));
    } catch (e) {
      log.error(`cannot start: ${(e as Error).message}`);
      await audit.close();
      state?.close();
      return EXIT_FAILURE;
    }
    const store = approvals;
    // The approvers' notices, and the sender's result notice with notify_sender (docs/approvals.md "Notices").
    const notices = new Notifier(approvalContext(store), { credentials: accounts.credentials });
    notifier = notices;
    const actx = approvalContext(store, (row, held) => notices.decided(row, held));
    if (!audit.healthy)
      log.warn("approvals: the audit log cannot be written: a message left sending is checked at the next start");
    const released = store.releaseUsedTokens();
    if (released > 0)
      log.info(`approvals: ${released} link(s) in use when the process stopped work again (their messages are held)`);
    linkContext = actx;
    lookAfterHeld(actx, () => setHeldApprovals(store.heldNow()));
    // Approvers not told before the last stop (or crash) are told now; expired messages were just expired
    // (docs/approvals.md "Notices").
    const owed = notices.resume();
    if (owed.length > 0) log.info(`approvals: sending the notices still owed for ${owed.length} held message(s)`);
    // The approval page on the admin listener; the link's signed token is its only credential (docs/approvals.md).
    const page = approvalPage(actx);
    approvalsPage = page;
    // Its form is at most MAX_FORM_BYTES: the listener holds no more of a body for it (ADMIN_MAX_BODY_BYTES).
    for (const method of ["GET", "POST"])
      unregister.push(
        registerAdminRoute(method, "/approvals", (req) => page.handle(req), {
          auth: "none",
          maxBodyBytes: MAX_FORM_BYTES,
        }),
      );
  } else if (held.some((h) => h.pidFile === statePid) && existsSync(config.state.path)) {
    // No rule asks any more, but messages held under an earlier config may still wait in the state database: they
    // still expire on time, wiping their bytes and any agent credentials with them, and a replay a dead process left
    // is still marked for a check. No page and no notices: `mailgator approvals` decides them (docs/approvals.md
    // "When no rule asks any more").
    try {
      // Counted first without the sealed store, which would migrate the file and want the secrets key: a state
      // database that only counts quotas has neither approvals nor a key.
      const waiting = heldWaiting(config.state.path);
      if (waiting > 0) {
        state ??= SealedStore.open(config.state.path, {
          secretsFile: config.state.secretsFile,
          env: ctx.env,
          create: false,
        });
        if (state === null) throw new Error("it does not exist");
        log.warn(
          `approvals: ${waiting} message(s) held under an earlier config wait in ${config.state.path}, but no rule ` +
            "asks any more: they expire at their time unless decided with `mailgator approvals`",
        );
        lookAfterHeld(approvalContext(new ApprovalStore(state)), () => {});
      }
    } catch (e) {
      log.warn(`approvals: cannot look for held messages in ${config.state.path}: ${errorMessage(e)}`);
    }
  }
  if (state) log.info(`state database: ${state.path}`);
  let quotas: ReturnType<typeof openQuotas> | null = null;
  try {
    quotas = openQuotas(config, state?.db ?? null, openStateDatabase);
  } catch (e) {
    log.error(`cannot start: quotas: ${(e as Error).message}`);
    // The notices still owed are being sent (resume above): they end as in any other stop.
    await closeStores();
    return EXIT_FAILURE;
  }
  if (config.quotas.length > 0) log.info(`quotas: ${config.quotas.length}, counted in ${config.state.path}`);
  const handles: ProxyHandle[] = [];
  const listening: Record<"imap" | "smtp", boolean> = { imap: false, smtp: false };
  let admin: AdminServer | null = null;
  // Reloads run one at a time, in the order the signals came; one that comes before the proxies listen waits.
  let reloads: Promise<void> = Promise.resolve();
  const reloadNow = (): void => {
    reloads = reloads
      .then(() => {
        let result = reload({ path: config.file, ownedOnly: location.ownedOnly }, ctx.env, live, handles, audit.path, {
          quotas,
          credentials: accounts.credentials,
          approvals: approvals !== null,
          sealed: state === null ? null : { path: config.state.path, secretsFile: config.state.secretsFile },
          admin: config.admin,
        });
        // The reloaded agents may read a mailbox a notice went to (docs/approvals.md "Links"): checked before this
        // turn ends, so no decision comes between.
        if (linkContext !== null && result.ok) {
          try {
            withdrawExposedLinks(linkContext);
          } catch (e) {
            // The new config is in force: the operator is told, as of any step of a reload that failed after the
            // swap.
            const why = `the approval links could not be checked against the new agents: ${errorMessage(e)}`;
            // Until a check succeeds, the page tries it again before each request and refuses while it fails.
            approvalsPage?.oweLinkCheck();
            log.error(`reload: ${why}`);
            result = { ...result, errors: [...result.errors, why] };
          }
        }
        writeStatusFile(statusFile, config.file, result, (m) => log.error(m));
        emitReload(result);
      })
      // An unexpected throw (a bug) is logged; the chain stays usable, so the next SIGHUP still reloads.
      .catch((e: unknown) => log.error(`reload: unexpected error: ${(e as Error).message}`));
  };
  // mailgator_reloads_total{result} (docs/operations.md "Health and metrics").
  const stopCounting = onReload((result) => countReload(result.ok && result.errors.length === 0));
  const deps: ProxyDeps = {
    config,
    policy,
    audit,
    credentials: accounts.credentials,
    live,
    approvals,
    ...(notifier === null ? {} : { onHeld: (row: ApprovalRow) => notifier?.held(row) }),
    quotas: quotas.quotas,
    lockout: new LoginLockout(),
  };
  try {
    for (const name of ["imap", "smtp"] as const) {
      if (!config[name]) continue;
      const start = PROXIES[name];
      if (!start) {
        log.warn(
          `[${name}] is configured, but this build has no ${name.toUpperCase()} proxy yet: nothing listens on ` +
            `${config[name].listenAddr.host}:${config[name].listenAddr.port}`,
        );
        continue;
      }
      handles.push(await start(deps)); // each proxy logs its own "listening on" line
      listening[name] = true;
    }
    if (config.admin !== null && handles.length > 0) {
      admin = startAdmin({
        config: config.admin,
        health: () => health(config, listening, audit),
        sample: () => {
          auditRowsWritten.setTotal({}, audit.written);
          auditRowsQueued.set({}, audit.queued);
          auditHealthy.set({}, audit.healthy ? 1 : 0);
          // Read at each scrape: a send held or decided since (by this process, the CLI or the page) counts now.
          // A read that fails (the database busy) leaves the last value: the scrape itself must still answer.
          try {
            if (approvals !== null) setHeldApprovals(approvals.heldNow());
          } catch (e) {
            log.warn(`metrics: cannot count the held approvals: ${errorMessage(e)}`);
          }
        },
        // The approval links' host, as the config in force names it: a reverse proxy may pass it on as the Host.
        hostNames: () =>
          live.config.approvals.baseUrl === null ? [] : [new URL(live.config.approvals.baseUrl).hostname],
      });
      log.info(`admin listening on http://${hostPort(admin.address)} (/healthz, /metrics)`);
    }
  } catch (e) {
    log.error(`cannot start: ${(e as Error).message}`);
    await admin?.close();
    await Promise.allSettled(handles.map((h) => h.close()));
    await closeStores();
    return EXIT_FAILURE;
  }
  if (handles.length === 0) {
    log.error("no listener could start: nothing to serve");
    await closeStores();
    return EXIT_FAILURE;
  }
  hup = {
    reload: reloadNow,
    refuse: () =>
      writeStatusFile(
        statusFile,
        config.file,
        notReloaded(live.config.revision, ["serve is shutting down: not reloaded"]),
        (m) => log.error(m),
      ),
  };
  if (pendingHup && !stopping) reloadNow();
  await stopped;
  listening.imap = listening.smtp = false; // /healthz says so while the proxies close
  // The approval page refuses new decisions now; those under way end, or are cut off past the grace, while the
  // databases they write to are still open (docs/approvals.md "What is guaranteed").
  const decisions = approvalsPage?.drain(SHUTDOWN_GRACE_MS) ?? Promise.resolve(0);
  stopCounting();
  await reloads;
  await Promise.allSettled(handles.map((h) => h.close()));
  const cutOff = await decisions;
  if (cutOff > 0)
    log.warn(`approvals: ${cutOff} decision(s) still under way after ${SHUTDOWN_GRACE_MS / 1000} s were stopped`);
  await admin?.close();
  for (const f of unregister) f();
  const closed = await closeStores();
  rmSync(statusFile, { force: true }); // and the pid file once this returns (serve above)
  // The handler stays until the process exits: without it a SIGHUP from here on (the pid file's removal, the
  // runtime's own teardown) would take the default action and end serve with 129 instead of its exit code. With
  // `hup` gone it only logs: the status file is not written again.
  hup = null;
  return closed ? EXIT_OK : EXIT_FAILURE;

  /**
   * The end of every stop once the listeners are closed, in this order: the notices, the token requests in flight,
   * then the audit log, the quotas and the state database. False when the audit log's last rows could not be
   * written (logged); the rest is closed all the same.
   */
  async function closeStores(): Promise<boolean> {
    if (expiry) clearInterval(expiry);
    // Retries still waiting give up (a failure row each) while the audit log is open; a notice still being sent
    // gets the proxies' grace (docs/approvals.md "Notices").
    await notifier?.close(SHUTDOWN_GRACE_MS);
    // An OAuth2 token request still in flight (at most TOKEN_REQUEST_TIMEOUT_MS) is written before the state
    // database closes: a refresh token the provider rotated would otherwise be lost (docs/accounts.md).
    await accounts.credentials.settled();
    // An approval cut off while its login waited for a token has just gone on: its row is written before the close.
    if (approvalsPage !== null && !(await approvalsPage.windUp()))
      log.warn("approvals: a decision was still under way when the audit log closed");
    let ok = true;
    try {
      await audit.close();
    } catch (e) {
      log.error(`audit log: ${errorMessage(e)}`);
      ok = false;
    }
    quotas?.close();
    state?.close();
    return ok;
  }
}

function hostPort(a: { readonly host: string; readonly port: number }): string {
  return a.host.includes(":") ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}

/** `/healthz`: ready when every configured proxy listens and the audit log is writable (docs/operations.md). */
function health(config: Config, listening: Readonly<Record<"imap" | "smtp", boolean>>, audit: AuditLog): HealthReport {
  const problems: string[] = [];
  const checks: Record<string, boolean> = {};
  for (const name of ["imap", "smtp"] as const) {
    if (config[name] === null) continue;
    checks[`${name}_listening`] = listening[name];
    if (!listening[name]) problems.push(`the ${name.toUpperCase()} proxy is not listening`);
  }
  checks["audit_writable"] = audit.healthy;
  if (!audit.healthy) problems.push(`the audit log ${config.audit.path} cannot be written`);
  return { problems, checks };
}

/** What else of the running process a reload reaches besides the proxies (all optional for tests). */
export interface ReloadParts {
  readonly quotas?: RunningQuotas | null;
  readonly credentials?: AccountCredentials | null;
  /** Whether held messages have a store: approvals are set up at start only (docs/approvals.md). */
  readonly approvals?: boolean;
  /** The state database of sealed records (OAuth2 tokens, held messages) the process opened at start, if any. */
  readonly sealed?: { readonly path: string; readonly secretsFile: string } | null;
  /** `[admin]` as the admin listener started with (it is not reloaded); undefined: not compared. */
  readonly admin?: Config["admin"];
}

/** The outcome of a reload that changed nothing: `revision` stays in force. */
function notReloaded(revision: string, errors: string[], at = new Date().toISOString()): ReloadResult {
  return { ok: false, at, revision, previousRevision: revision, errors, warnings: [], sessionsEnded: 0 };
}

/**
 * One reload: load and check the file, read the TLS files of each proxy, then swap everything in at once; on any
 * error nothing changes (docs/operations.md "Reload"). Logs the outcome and returns it.
 */
export function reload(
  file: string | ConfigLocation,
  env: Readonly<Record<string, string | undefined>>,
  live: LiveConfig,
  handles: readonly ProxyHandle[],
  auditPath: string,
  parts: ReloadParts = {},
): ReloadResult {
  const { quotas = null, credentials = null, approvals = false, sealed = null } = parts;
  const log = moduleLogger("reload");
  const previous = live.config;
  const at = new Date().toISOString();
  const failed = (errors: string[]): ReloadResult => {
    for (const e of errors) log.error(`reload failed, the running config stays in force: ${e}`);
    return notReloaded(previous.revision, errors, at);
  };
  let next: Config;
  try {
    next = loadConfig(file, { env });
  } catch (e) {
    if (e instanceof ConfigError) return failed(e.problems.map((p) => formatProblem(e.file, p)));
    return failed([(e as Error).message]);
  }
  // A listener is started once (docs/operations.md "Reload"): one the file adds would not listen, and one it removes
  // would go on serving under a config without it. Each proxy refuses the removal of its own section too
  // (src/runtime/reload.ts listenerReload); the addition of one that is not running only shows here.
  for (const name of ["imap", "smtp"] as const)
    if ((previous[name] === null) !== (next[name] === null))
      return failed([
        `[${name}] was ${next[name] === null ? "removed" : "added"}: adding or removing a listener needs a restart`,
      ]);
  // Vault mode to pass-through (docs/operations.md "Reload"): a file without [[agents]] would admit every login the
  // upstream accepts where only the agents' tokens were taken. An operator who removes the last agent most likely
  // means to shut agents out, not to open the proxy to anyone holding a mailbox password: refused, a restart switches.
  if (previous.agents.length > 0 && next.agents.length === 0)
    return failed([
      "the new config has no [[agents]]: that would switch from vault mode to pass-through, where any login the " +
        "upstream accepts is let in; a reload does not switch modes (restart serve to do it; to shut every agent " +
        "out, stop serve)",
    ]);
  const warnings = [...next.warnings];
  const asking = next.rules.findIndex((r) => r.action === "ask");
  if (asking !== -1 && !approvals) {
    const rule = `rule ${asking + 1} "${next.rules[asking]!.name}"`;
    warnings.push(
      `${rule} asks for approval, but approvals are set up at start: until a restart, a send it holds is ` +
        "refused with 451 and nothing is sent",
    );
  }
  if (sealed !== null && (next.state.path !== sealed.path || next.state.secretsFile !== sealed.secretsFile)) {
    warnings.push(
      `[state] cannot change on reload: tokens and held messages stay in ${sealed.path} (secrets key ` +
        `${sealed.secretsFile}); restart to use ${next.state.path} (secrets key ${next.state.secretsFile})`,
    );
  }
  if (next.audit.path !== auditPath)
    warnings.push(
      `[audit] path cannot change on reload: still writing ${auditPath}; restart to use ${next.audit.path}`,
    );
  if (parts.admin !== undefined && JSON.stringify(next.admin) !== JSON.stringify(parts.admin))
    warnings.push(
      "[admin] cannot change on reload: the admin listener keeps the address, allow_remote and token_hash it " +
        "started with; restart to use the new ones",
    );
  let policy: Policy;
  const prepared: PreparedReload[] = [];
  try {
    policy = compilePolicy(next.rules);
    for (const s of policy.shadowed())
      warnings.push(`rule ${s.index + 1} "${s.name}" can never match (rule ${s.byIndex + 1} "${s.by}" decides first)`);
    for (const h of handles) prepared.push(h.prepareReload(next));
    if (credentials !== null) {
      const c = credentials.prepareReload(next);
      prepared.push({ warnings: [], commit: () => (c.commit(), 0) });
    }
    // Last: it may open the state database, which nothing after it could leave open on a failure.
    if (quotas !== null) {
      const q = quotas.prepareReload(next);
      prepared.push({ warnings: q.warnings, commit: () => (q.commit(), 0) });
    }
  } catch (e) {
    return failed([(e as Error).message]);
  }
  for (const p of prepared) warnings.push(...p.warnings);
  live.swap(next, policy);
  let sessionsEnded = 0;
  // The new config is in force from the swap on: a step that throws (a bug) must not keep the steps after it from
  // running (another proxy's sessions the new rules end, the accounts, the quotas); it is an error of the outcome,
  // which is then a reload in part (`mailgator reload` exits 1 and says to restart).
  const errors: string[] = [];
  for (const p of prepared) {
    try {
      sessionsEnded += p.commit();
    } catch (e) {
      // Sessions that could not take the new config were ended (src/runtime/reload.ts): none stays open under it.
      if (e instanceof ReloadPartError) sessionsEnded += e.sessionsEnded;
      const problem =
        e instanceof SessionsNotReloaded
          ? `a step of the reload failed: ${e.message}; the new config is in force`
          : `a step of the reload failed (${errorMessage(e)}): the new config is in force, but what that step ` +
            "applies (sessions it ends, upstream settings) may not be; restart to be sure";
      log.error(problem);
      errors.push(problem);
    }
  }
  for (const w of warnings) log.warn(w);
  const path = typeof file === "string" ? file : file.path;
  log.info(
    `reloaded ${errors.length > 0 ? "in part " : ""}${path}: config revision ${previous.revision} -> ${next.revision}` +
      (sessionsEnded > 0 ? `, ${sessionsEnded} session(s) ended` : ""),
  );
  return {
    ok: true,
    at,
    revision: next.revision,
    previousRevision: previous.revision,
    errors,
    warnings,
    sessionsEnded,
  };
}

/**
 * Messages held or being sent in the approvals of the state database at `path`, read without the sealed store
 * (src/state/store.ts): 0 when the file has no approvals at all.
 */
function heldWaiting(path: string): number {
  // Checked as every opening checks it: SQLite would wait for ever to read a FIFO at the path, before serve listens.
  checkDatabaseFiles(path);
  const db = new Database(path, { readonly: true });
  try {
    if (db.query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'approvals'").get() === null) return 0;
    const row = db.query("SELECT count(*) AS n FROM approvals WHERE state IN ('held', 'sending')").get() as {
      n: number;
    };
    return row.n;
  } finally {
    db.close();
  }
}

/** Whether serve opens the state database for this config: OAuth2 accounts, `[[quotas]]`, rules that ask. */
function usesStateDatabase(config: Config): boolean {
  return (
    Object.values(config.accounts).some((a) => a.auth === "oauth2") ||
    config.quotas.length > 0 ||
    config.rules.some((r) => r.action === "ask")
  );
}
