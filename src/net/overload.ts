/** The audit row of a connection refused at a connection limit (docs/config.md, `[limits]`). */

import { randomBytes } from "node:crypto";
import type { AuditEvent, AuditProtocol } from "../audit/index.ts";
import type { Overload } from "./listener.ts";

/** A `deny` row naming the limit; the connection never had a session, so the row gets a session id of its own. */
export function overloadEvent(
  protocol: AuditProtocol,
  clientAddr: string,
  over: Overload,
  configRevision: string,
): AuditEvent {
  return {
    session: randomBytes(6).toString("hex"),
    agent: null,
    clientAddr,
    protocol,
    command: "(connect)",
    operation: null,
    folder: null,
    target: null,
    decision: "deny",
    rule: null,
    ruleIndex: null,
    reason: `connection refused: ${over.limit} (${over.value}) reached`,
    configRevision,
    detail: { limit: over.limit, value: over.value },
  };
}
