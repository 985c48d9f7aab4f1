/**
 * The process's metrics, served by the admin listener at `/metrics` in the Prometheus text exposition format
 * (version 0.0.4; docs/operations.md, "Health and metrics"). No dependency: counters, gauges and histograms with
 * fixed label names, kept in this module so that any part of the proxy can count without being handed a registry.
 *
 * Label values come only from fixed sets (protocol, operation, decision, limit name, configured upstream address),
 * never from what an agent sends, so a client cannot grow the set of series.
 */

type Labels = Readonly<Record<string, string>>;

/** Escapes a label value (backslash, double quote, newline), as the text format requires. */
function escapeLabel(value: string): string {
  return value.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
}

function labelText(names: readonly string[], values: readonly string[], extra = ""): string {
  const parts = names.map((n, i) => `${n}="${escapeLabel(values[i] ?? "")}"`);
  if (extra !== "") parts.push(extra);
  return parts.length === 0 ? "" : `{${parts.join(",")}}`;
}

function numberText(n: number): string {
  if (Number.isNaN(n)) return "NaN";
  if (n === Number.POSITIVE_INFINITY) return "+Inf";
  if (n === Number.NEGATIVE_INFINITY) return "-Inf";
  return String(n);
}

abstract class Metric {
  readonly #series = new Map<string, { values: string[]; value: number }>();
  constructor(
    readonly name: string,
    readonly help: string,
    readonly labelNames: readonly string[],
    readonly type: "counter" | "gauge",
  ) {}

  protected entry(labels: Labels): { values: string[]; value: number } {
    const values = this.labelNames.map((n) => labels[n] ?? "");
    const key = values.join("\u0000");
    let e = this.#series.get(key);
    if (e === undefined) {
      e = { values, value: 0 };
      this.#series.set(key, e);
    }
    return e;
  }

  /** The current value of one series (0 when never touched). */
  get(labels: Labels = {}): number {
    return this.#series.get(this.labelNames.map((n) => labels[n] ?? "").join("\u0000"))?.value ?? 0;
  }

  render(): string {
    let out = `# HELP ${this.name} ${this.help}\n# TYPE ${this.name} ${this.type}\n`;
    for (const e of this.#series.values())
      out += `${this.name}${labelText(this.labelNames, e.values)} ${numberText(e.value)}\n`;
    return out;
  }
}

export class Counter extends Metric {
  constructor(name: string, help: string, labelNames: readonly string[] = []) {
    super(name, help, labelNames, "counter");
  }
  inc(labels: Labels = {}, by = 1): void {
    if (by < 0) throw new RangeError(`${this.name}: a counter only goes up`);
    this.entry(labels).value += by;
  }
  /** `inc()` of one series, looked up once: for a caller that counts the same series often. */
  incrementer(labels: Labels): () => void {
    const e = this.entry(labels);
    return () => {
      e.value++;
    };
  }
  /** For a total kept elsewhere (the audit log's committed rows): taken as is at each scrape. */
  setTotal(labels: Labels, total: number): void {
    this.entry(labels).value = total;
  }
}

export class Gauge extends Metric {
  constructor(name: string, help: string, labelNames: readonly string[] = []) {
    super(name, help, labelNames, "gauge");
  }
  set(labels: Labels, value: number): void {
    this.entry(labels).value = value;
  }
  inc(labels: Labels = {}, by = 1): void {
    this.entry(labels).value += by;
  }
  dec(labels: Labels = {}, by = 1): void {
    this.entry(labels).value -= by;
  }
}

export class Histogram {
  readonly #series = new Map<string, { values: string[]; counts: number[]; sum: number; count: number }>();
  constructor(
    readonly name: string,
    readonly help: string,
    readonly labelNames: readonly string[],
    /** Upper bounds, ascending; `+Inf` is added. */
    readonly buckets: readonly number[],
  ) {}

  observe(labels: Labels, value: number): void {
    const values = this.labelNames.map((n) => labels[n] ?? "");
    const key = values.join("\u0000");
    let e = this.#series.get(key);
    if (e === undefined) {
      e = { values, counts: this.buckets.map(() => 0), sum: 0, count: 0 };
      this.#series.set(key, e);
    }
    for (let i = 0; i < this.buckets.length; i++) if (value <= this.buckets[i]!) e.counts[i]!++;
    e.sum += value;
    e.count++;
  }

  /** Observations of one series so far. */
  count(labels: Labels = {}): number {
    return this.#series.get(this.labelNames.map((n) => labels[n] ?? "").join("\u0000"))?.count ?? 0;
  }

  render(): string {
    let out = `# HELP ${this.name} ${this.help}\n# TYPE ${this.name} histogram\n`;
    for (const e of this.#series.values()) {
      this.buckets.forEach((le, i) => {
        out += `${this.name}_bucket${labelText(this.labelNames, e.values, `le="${numberText(le)}"`)} ${e.counts[i]}\n`;
      });
      out += `${this.name}_bucket${labelText(this.labelNames, e.values, 'le="+Inf"')} ${e.count}\n`;
      out += `${this.name}_sum${labelText(this.labelNames, e.values)} ${numberText(e.sum)}\n`;
      out += `${this.name}_count${labelText(this.labelNames, e.values)} ${e.count}\n`;
    }
    return out;
  }
}

/** Agent connections open now, by protocol (each is one IMAP or SMTP session). */
export const sessionsOpen = new Gauge("mailgator_sessions_open", "Agent connections open now.", ["protocol"]);
/** Agent connections accepted (not refused at a limit) since start. */
export const connectionsAccepted = new Counter(
  "mailgator_connections_total",
  "Agent connections accepted since start.",
  ["protocol"],
);
/** Connections and logins refused at a `[limits]` limit, by the limit's name in the config. */
export const limitRefusals = new Counter(
  "mailgator_limit_refusals_total",
  "Connections refused at max_connections or max_connections_per_ip, and logins at max_sessions_per_agent.",
  ["protocol", "limit"],
);
/** One per audit row: every decided command (and every refused connection), by operation and decision. */
export const decisions = new Counter(
  "mailgator_decisions_total",
  "Audited decisions (one per decided command), by protocol, operation and decision.",
  ["protocol", "operation", "decision"],
);
/** Upstream connections that failed (connect, TLS handshake, timeout), by configured upstream address. */
export const upstreamErrors = new Counter(
  "mailgator_upstream_errors_total",
  "Upstream connection attempts that failed (refused, TLS handshake or verification, timeout).",
  ["upstream"],
);
/** Seconds to connect to the upstream (with the TLS handshake for implicit TLS), successful attempts only. */
export const upstreamConnectSeconds = new Histogram(
  "mailgator_upstream_connect_seconds",
  "Time to open an upstream connection (TCP connect, plus the TLS handshake for implicit TLS).",
  ["upstream"],
  [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
);
/** Committed audit rows since start (set from the audit log at each scrape). */
export const auditRowsWritten = new Counter(
  "mailgator_audit_rows_written_total",
  "Audit rows committed to the audit log since start.",
);
export const auditRowsQueued = new Gauge("mailgator_audit_rows_queued", "Audit rows waiting to be committed.");
export const auditHealthy = new Gauge("mailgator_audit_healthy", "1 when the audit log is writable, else 0.");
export const heldApprovals = new Gauge(
  "mailgator_approvals_held",
  'Requests held for an approval (rules with action = "ask").',
);
/** The IMAP listener's response memory budget (docs/reliability.md "Response memory"). */
export const responseMemoryReserved = new Gauge(
  "mailgator_imap_response_memory_bytes",
  "Octets of upstream responses reserved against the IMAP response memory budget.",
);
export const responseMemoryWaiting = new Gauge(
  "mailgator_imap_response_memory_waiting",
  "IMAP sessions waiting for room in the response memory budget.",
);
/** Upstream IMAP sessions kept for the next login of their account (docs/imap.md). */
export const keptUpstreamSessions = new Gauge(
  "mailgator_imap_upstream_sessions_kept",
  "Logged-in upstream IMAP sessions kept for the next login of their account.",
);
export const reloads = new Counter("mailgator_reloads_total", "Config reloads, by result (ok, error).", ["result"]);

const ALL: readonly { render(): string }[] = [
  sessionsOpen,
  connectionsAccepted,
  limitRefusals,
  decisions,
  upstreamErrors,
  upstreamConnectSeconds,
  auditRowsWritten,
  auditRowsQueued,
  auditHealthy,
  heldApprovals,
  responseMemoryReserved,
  responseMemoryWaiting,
  keptUpstreamSessions,
  reloads,
];

// Series that should read 0 before anything happened, so a dashboard sees them from the first scrape.
heldApprovals.set({}, 0);
keptUpstreamSessions.set({}, 0);
reloads.inc({ result: "ok" }, 0);
reloads.inc({ result: "error" }, 0);

/** For the reload code: one reload attempt, successful or not. */
export function countReload(ok: boolean): void {
  reloads.inc({ result: ok ? "ok" : "error" });
}

/** For the approvals code: requests held now. */
export function setHeldApprovals(n: number): void {
  heldApprovals.set({}, n);
}

/**
 * The series of `decisions`, by protocol, then operation, then decision: every audited command counts one, so its
 * series is found without building a label object and key each time. The sets are fixed (see top), so it stays small.
 */
const decisionSeries = new Map<string, Map<string, Map<string, () => void>>>();

/** For the audit log: one row recorded (a decision, or a refused connection: operation "none"). */
export function countDecision(protocol: string, operation: string | null, decision: string): void {
  const op = operation ?? "none";
  let byOperation = decisionSeries.get(protocol);
  if (byOperation === undefined) decisionSeries.set(protocol, (byOperation = new Map()));
  let byDecision = byOperation.get(op);
  if (byDecision === undefined) byOperation.set(op, (byDecision = new Map()));
  let count = byDecision.get(decision);
  if (count === undefined) {
    count = decisions.incrementer({ protocol, operation: op, decision });
    byDecision.set(decision, count);
  }
  count();
}

/** For the proxies: a connection accepted; returns the function to call once when it closes. */
export function countSession(protocol: "imap" | "smtp"): () => void {
  connectionsAccepted.inc({ protocol });
  sessionsOpen.inc({ protocol });
  let open = true;
  return () => {
    if (!open) return;
    open = false;
    sessionsOpen.dec({ protocol });
  };
}

export function countLimitRefusal(
  protocol: "imap" | "smtp",
  limit: "max_connections" | "max_connections_per_ip" | "max_sessions_per_agent",
): void {
  limitRefusals.inc({ protocol, limit });
}

/** The whole exposition, in the text format (`Content-Type: text/plain; version=0.0.4`). */
export function renderMetrics(): string {
  return ALL.map((m) => m.render()).join("");
}

export const METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";
