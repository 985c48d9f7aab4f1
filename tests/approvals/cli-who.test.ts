/**
 * Who decided, in the audit row of a decision made with `mailgator approvals` (docs/approvals.md): the name of the
 * user running the command, from the password database, also when `$USER` is not set (a cron job, `env -i`, a
 * service's shell), where the runtime's `os.userInfo()` says "unknown"; `uid N` where the database has no entry.
 */
import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { AuditLog } from "../../src/audit/index.ts";
import { currentUser, nameOfUid } from "../../src/cli/user.ts";
import { holdForCli, runCli } from "./cli-fixture.ts";

const dir = mkdtempSync(join(tmpdir(), "mg-cli-who-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

test("approvals deny run without $USER names the user from the password database", async () => {
  const held = await holdForCli(
    dir,
    Buffer.from("From: bot@corp.test\r\nTo: x@out.test\r\nSubject: who\r\n\r\nhi\r\n"),
  );
  held.state.close();
  // runCli gives the process PATH and nothing else: no USER, no LOGNAME, no HOME.
  const r = runCli("approvals", "deny", held.id, "-c", held.file);
  expect(r.code).toBe(0);
  const audit = AuditLog.open(join(dir, "audit.db"));
  try {
    const rows = audit.query({ order: "asc" }).filter((row) => row.command === "DENY");
    expect(rows.length).toBe(1);
    const name = currentUser();
    expect(name).not.toStartWith("uid ");
    expect(rows[0]!.reason).toContain(`by cli:${name}`);
    expect(rows[0]!.reason).not.toContain("cli:unknown");
  } finally {
    audit.close();
  }
});

test("a user id the password database does not hold is named by its number", () => {
  const passwd = "root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
  expect(nameOfUid(passwd, 0)).toBe("root");
  expect(nameOfUid(passwd, 65534)).toBe("nobody");
  expect(nameOfUid(passwd, 1000)).toBeNull();
  // A field that only contains the id elsewhere (a gid, a home folder) is not the uid.
  expect(nameOfUid("alice:x:1001:1000::/home/1000:/bin/sh\n", 1000)).toBeNull();
  const file = join(dir, "passwd");
  writeFileSync(file, "someone:x:4242:4242::/:/bin/sh\n");
  expect(currentUser(file)).toBe(`uid ${process.getuid!()}`);
  expect(currentUser(join(dir, "missing"))).toBe(`uid ${process.getuid!()}`);
});
