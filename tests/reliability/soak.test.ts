/**
 * The short soak of docs/reliability.md ("Soak, faults and fuzzing"): mixed IMAP and SMTP sessions through a real
 * `mailgator serve` process against Dovecot and Postfix for about 15 s. The audit log must hold exactly the rows
 * the clients' own counts predict, no client may see an error, and no agent or upstream connection may be left.
 * RSS is reported, not checked: a run this short has no meaningful warm-up value (the long run checks it).
 */

import { expect, test } from "bun:test";
import { runSoak } from "../../scripts/soak/soak.ts";

test("15 s of mixed IMAP/SMTP traffic: audit rows equal the client's counts, no error, none left open", async () => {
  const report = await runSoak({
    sessions: 24,
    seconds: 15,
    imapShare: 0.7,
    users: 4,
    messages: 60,
    thinkMs: 100,
    warmupSeconds: 5,
    idleSeconds: 2,
    sampleMs: 1000,
    rssTolerance: 0.2,
    checkRss: false,
    seed: 17,
    env: {},
    heapProbe: false,
    log: () => {},
  });
  expect(report.problems).toEqual([]);
  expect(report.errorCount).toBe(0);
  // The traffic really happened, on both protocols, with allowed and refused operations.
  expect(report.cycles.imap).toBeGreaterThan(20);
  expect(report.cycles.smtp).toBeGreaterThan(10);
  expect(report.cycles.sends).toBeGreaterThan(5);
  for (const key of [
    "imap LOGIN allow",
    "imap SELECT deny",
    "imap UID STORE allow",
    "smtp DATA allow",
    "smtp RCPT TO deny",
  ])
    expect(report.audit.get(key) ?? 0).toBeGreaterThan(0);
  expect(report.leftover).toEqual({ agents: 0, upstream: 0 });
}, 60_000);
