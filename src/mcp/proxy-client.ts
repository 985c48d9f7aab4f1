/**
 * How `mailgator mcp --agent` reaches mail: as a client of the running Mailgator's own IMAP and SMTP listeners,
 * logged in with the agent's identity (docs/mcp.md "Design"). Every operation therefore passes the same rules,
 * the same folder and message hiding and the same audit log as any other client; this process never holds the
 * upstream credentials and has no other way to the mailbox.
 *
 * IMAP is spoken with imapflow and SMTP with nodemailer (well-kept clients the proxies are tested with); both see
 * only the listener, which answers them as it answers any agent.
 */

import { X509Certificate } from "node:crypto";
import { type ConnectionOptions, checkServerIdentity, type PeerCertificate, rootCertificates } from "node:tls";
import { ImapFlow } from "imapflow";
import nodemailer from "nodemailer";
import type { HostPort, ListenerConfig } from "../config/index.ts";
import { readTlsFile } from "../net/tls-file.ts";

/** Connect, greeting and login to a listener: past this a tool call fails instead of hanging. */
export const PROXY_CONNECT_TIMEOUT_MS = 15_000;

export interface ProxyLogin {
  /** Vault mode: the agent's name; pass-through: the upstream login name. */
  readonly user: string;
  /** Vault mode: the agent's token; pass-through: the upstream password. */
  readonly secret: string;
  /** Extra CA certificates (PEM) to trust for the listeners' TLS (--ca-file); null for none. */
  readonly caFile: string | null;
}

/** Where to connect for a listen address: a wildcard address is reached on loopback. */
export function connectHost(addr: HostPort): string {
  if (addr.host === "0.0.0.0" || addr.host === "") return "127.0.0.1";
  if (addr.host === "::" || addr.host === "[::]") return "::1";
  return addr.host.replace(/^\[|\]$/g, "");
}

const PEM = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g;

/** The certificates in a PEM file; none when it cannot be read (as src/net/tls-file.ts reads: never a FIFO). */
function pemCertificates(file: string | null): string[] {
  if (file === null) return [];
  try {
    return readTlsFile(file).toString("utf8").match(PEM) ?? [];
  } catch {
    return [];
  }
}

/**
 * TLS options for a listener that speaks TLS (docs/mcp.md "Connecting"): verified against the system's roots, the
 * certificates in `caFile` (--ca-file) and those in the listener's own `tls_cert_file`, with the usual name check,
 * except that the exact certificate in `tls_cert_file` is accepted whatever name it carries (a self-signed listener
 * certificate on loopback). Nothing is ever accepted unverified.
 */
export function listenerTls(listener: ListenerConfig, caFile: string | null): ConnectionOptions {
  const host = connectHost(listener.listenAddr);
  const own = pemCertificates(listener.tlsCertFile);
  const pinned = own.flatMap((pem) => {
    try {
      return [new X509Certificate(pem).fingerprint256];
    } catch {
      return [];
    }
  });
  return {
    ca: [...rootCertificates, ...pemCertificates(caFile), ...own],
    ...(/^[\d.:]+$/.test(host) ? {} : { servername: host }),
    checkServerIdentity: (name: string, cert: PeerCertificate) =>
      pinned.includes(cert.fingerprint256) ? undefined : checkServerIdentity(name, cert),
  };
}

/** The text a failed IMAP command carries (the proxy's NO/BAD text), else the error's message. */
export function imapErrorText(error: unknown): string {
  const e = error as { responseText?: string; response?: string; message?: string; code?: string };
  return e.responseText || e.response || e.message || e.code || String(error);
}

/**
 * Why the last command imapflow did not carry out on each connection, as imapflow logs it: imapflow resolves a
 * refused SEARCH, STORE, MOVE or EXPUNGE to `false` and gives the error (with the listener's text) to its logger
 * only, and drops without a word a flag the folder's PERMANENTFLAGS (RFC 9051 §7.1) leave out, sending nothing.
 * The logger keeps the reason here; `takeCommandRefusal` returns and forgets it.
 */
const refusals = new WeakMap<ImapFlow, string>();

/** What imapflow last reported on `client` about a command it did not carry out, if anything; forgets it. */
export function takeCommandRefusal(client: ImapFlow): string | undefined {
  const text = refusals.get(client);
  refusals.delete(client);
  return text;
}

/** The reason a warning imapflow logs gives for a command not carried out, or undefined for other warnings. */
function refusalOf(entry: { err?: unknown; dropped?: unknown } | undefined): string | undefined {
  if (entry?.err !== undefined) return `the listener's reply: ${imapErrorText(entry.err)}`;
  if (Array.isArray(entry?.dropped))
    return (
      `the folder does not accept ${entry.dropped.join(" ")}: the listener's PERMANENTFLAGS leave it out ` +
      `(RFC 9051 §7.1), so the command was not sent`
    );
  return undefined;
}

/** The SEARCH keys followed by strings (RFC 3501 §6.4.4): HEADER by two, a field name and the text. */
const SEARCH_STRINGS: Readonly<Record<string, number>> = {
  BCC: 1,
  BODY: 1,
  CC: 1,
  FROM: 1,
  HEADER: 2,
  SUBJECT: 1,
  TEXT: 1,
  TO: 1,
};

interface Token {
  readonly type: string;
  readonly value?: unknown;
}

/** `attributes` of a SEARCH with every string after a key of SEARCH_STRINGS that imapflow made an atom quoted. */
function quoteSearchStrings(attributes: unknown): unknown {
  if (!Array.isArray(attributes)) return attributes;
  const out: unknown[] = [];
  let strings = 0;
  for (const item of attributes as unknown[]) {
    const token = item as Token | null;
    if (strings > 0) {
      strings--;
      const atom = token !== null && typeof token === "object" && token.type === "ATOM";
      out.push(atom ? { type: "STRING", value: String(token.value ?? "") } : quoteSearchStrings(item));
      continue;
    }
    if (Array.isArray(item)) out.push(quoteSearchStrings(item));
    else {
      out.push(item);
      const key = token !== null && typeof token === "object" && token.type === "ATOM" ? String(token.value) : "";
      strings = SEARCH_STRINGS[key.toUpperCase()] ?? 0;
    }
  }
  return out;
}

type Exec = (command: string, attributes: unknown, options?: unknown) => Promise<unknown>;

/**
 * Makes `client` send each SEARCH string as a string: quoted (RFC 3501 §9; imapflow refuses one with CR, LF or NUL)
 * or, when not ASCII, the literal imapflow makes of it. imapflow sends an ASCII value as an atom when every
 * character after a leading backslash is an atom character, so `\Seen` or `\foo` went out bare: a backslash is no
 * atom character and an astring is no flag, so the listener answered BAD where the agent asked for the text `\Seen`
 * (docs/mcp.md "Agent tools"). imapflow offers no other way to choose the form (its `exec` is not in its types); a
 * version without `exec` fails here, at connection, rather than sending such searches as atoms.
 */
function searchStringsQuoted(client: ImapFlow): void {
  const target = client as unknown as { exec?: unknown };
  if (typeof target.exec !== "function") throw new Error("this imapflow has no exec: search strings cannot be quoted");
  const exec = (target.exec as Exec).bind(client);
  target.exec = ((command, attributes, options) =>
    exec(command, /^(UID )?SEARCH$/i.test(command) ? quoteSearchStrings(attributes) : attributes, options)) as Exec;
}

/** One IMAP connection to the listener, opened on first use and again after it closed; calls run one at a time. */
export class ProxyImap {
  #client: ImapFlow | null = null;
  #queue: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly listener: ListenerConfig,
    private readonly login: ProxyLogin,
  ) {}

  async #connect(): Promise<ImapFlow> {
    if (this.#client?.usable) return this.#client;
    const tls = this.listener.listenTls;
    const quiet = () => {};
    const logger = {
      trace: quiet,
      debug: quiet,
      info: quiet,
      error: quiet,
      fatal: quiet,
      warn: (entry: { err?: unknown; dropped?: unknown } | undefined) => {
        const refusal = refusalOf(entry);
        if (refusal !== undefined) refusals.set(client, refusal);
      },
    };
    const client: ImapFlow = new ImapFlow({
      host: connectHost(this.listener.listenAddr),
      port: this.listener.listenAddr.port,
      secure: tls === "tls",
      doSTARTTLS: tls === "starttls" ? true : tls === "none" ? false : undefined,
      tls: tls === "none" ? undefined : listenerTls(this.listener, this.login.caFile),
      auth: { user: this.login.user, pass: this.login.secret },
      logger,
      disableAutoIdle: true,
      connectionTimeout: PROXY_CONNECT_TIMEOUT_MS,
      greetingTimeout: PROXY_CONNECT_TIMEOUT_MS,
    } as ConstructorParameters<typeof ImapFlow>[0]);
    searchStringsQuoted(client);
    client.on("error", () => {
      // A dropped connection: the next call opens a new one.
    });
    client.on("close", () => {
      if (this.#client === client) this.#client = null;
    });
    try {
      await client.connect();
    } catch (e) {
      const where = `${connectHost(this.listener.listenAddr)}:${this.listener.listenAddr.port}`;
      throw new Error(`Mailgator's IMAP listener at ${where}: ${imapErrorText(e)}`);
    }
    this.#client = client;
    return client;
  }

  /** Runs `fn` on a logged-in connection, after every call before it. */
  run<T>(fn: (client: ImapFlow) => Promise<T>): Promise<T> {
    const next = this.#queue.then(async () => fn(await this.#connect()));
    this.#queue = next.catch(() => undefined);
    return next;
  }

  async close(): Promise<void> {
    const client = this.#client;
    this.#client = null;
    if (client?.usable) await client.logout().catch(() => client.close());
  }
}

export interface SendOutcome {
  /** The listener's final reply (e.g. "250 2.0.0 Held for approval as <id>"). */
  readonly response: string;
  /** The approval id when the message was held (`ask`, docs/approvals.md), else null. */
  readonly heldAs: string | null;
  readonly messageId: string;
  /**
   * Recipients the listener refused although it then accepted the message for the others, each with its reply.
   * Empty: the listener refuses DATA after any refused recipient (docs/smtp.md "All or nothing"); kept so that a
   * message delivered to some is reported as delivered to them, never as failed (which an agent would send again).
   */
  readonly refused: readonly string[];
}

/** The message a send transports (nodemailer's mail options, a subset). */
export interface OutgoingMail {
  readonly from: string;
  readonly to: readonly string[];
  readonly cc: readonly string[];
  readonly bcc: readonly string[];
  readonly subject: string;
  readonly text: string;
  readonly inReplyTo?: string | undefined;
  readonly references?: readonly string[] | undefined;
}

/** The SMTP error's text: the listener's reply when there is one. */
export function smtpErrorText(error: unknown): string {
  const e = error as { response?: string; message?: string; rejectedErrors?: { response?: string }[] };
  const rejected = (e.rejectedErrors ?? []).map((r) => r.response).filter((r): r is string => !!r);
  if (rejected.length > 0) return rejected.join("; ");
  return e.response || e.message || String(error);
}

/** Sends one message through the SMTP listener on a connection of its own. */
export async function sendThroughProxy(
  listener: ListenerConfig,
  login: ProxyLogin,
  mail: OutgoingMail,
): Promise<SendOutcome> {
  const tls = listener.listenTls;
  const transport = nodemailer.createTransport({
    host: connectHost(listener.listenAddr),
    port: listener.listenAddr.port,
    secure: tls === "tls",
    requireTLS: tls === "starttls",
    ignoreTLS: tls === "none",
    tls: tls === "none" ? undefined : listenerTls(listener, login.caFile),
    auth: { user: login.user, pass: login.secret },
    connectionTimeout: PROXY_CONNECT_TIMEOUT_MS,
    greetingTimeout: PROXY_CONNECT_TIMEOUT_MS,
  });
  try {
    const info = await transport.sendMail({
      from: mail.from,
      to: [...mail.to],
      cc: [...mail.cc],
      bcc: [...mail.bcc],
      subject: mail.subject,
      text: mail.text,
      ...(mail.inReplyTo === undefined ? {} : { inReplyTo: mail.inReplyTo }),
      ...(mail.references === undefined ? {} : { references: [...mail.references] }),
    });
    // nodemailer goes on with the recipients the listener accepted, and the listener refuses that DATA (docs/smtp.md
    // "All or nothing"), so nodemailer throws and nothing was sent. Were DATA ever accepted after a refusal, the
    // message went to the others: that is reported as sent to them, with the refusals, not as a failure.
    const rejected = (info as { rejectedErrors?: { recipient?: string; response?: string }[] }).rejectedErrors ?? [];
    const refused = info.rejected.map((r) => {
      const address = String(r);
      const why = rejected.find((e) => e.recipient === address)?.response;
      return why === undefined ? `<${address}>` : `<${address}> (${why})`;
    });
    const response = String(info.response ?? "");
    const held = /Held for approval as (\S+)/.exec(response);
    return { response, heldAs: held?.[1] ?? null, messageId: String(info.messageId ?? ""), refused };
  } finally {
    transport.close();
  }
}
