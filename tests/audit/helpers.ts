/** Shared fixtures for the audit tests: a scratch directory and a sample event. */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { AuditEvent } from "../../src/audit/index.ts";

export function scratchDir(): { dir: string; file: (name: string) => string; remove: () => void } {
  const dir = mkdtempSync(join(tmpdir(), "mailgator-audit-"));
  return { dir, file: (name) => join(dir, name), remove: () => rmSync(dir, { recursive: true, force: true }) };
}

export function sampleEvent(overrides: Partial<AuditEvent> = {}): AuditEvent {
  return {
    session: "s-1",
    agent: "triage-bot",
    clientAddr: "127.0.0.1:50123",
    protocol: "imap",
    command: "UID FETCH",
    operation: "mail:read",
    folder: "INBOX",
    target: "3 messages",
    decision: "allow",
    rule: "read-inbox",
    ruleIndex: 0,
    reason: "rule read-inbox allows mail:read in INBOX",
    configRevision: "cfg-abc123",
    ...overrides,
  };
}
