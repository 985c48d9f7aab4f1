/**
 * `mailgator audit --follow` across a rotation of the log (docs/audit.md "Reading the log" and "Failure": rotate by
 * stopping serve, moving the files, starting it again). The command follows the file at the config's `[audit]
 * path`: once that path names another file, it says so and prints the new file's rows, never goes on silently
 * polling the file that was moved away, where no row is written again.
 */
import { afterAll, expect, setDefaultTimeout, test } from "bun:test";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type AuditEvent, AuditLog } from "../../src/audit/index.ts";

setDefaultTimeout(60_000);
const ROOT = join(import.meta.dir, "../..");
const MAIN = join(ROOT, "src/cli/main.ts");
const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

const ev: AuditEvent = {
  session: "s",
  agent: "bot",
  clientAddr: "127.0.0.1",
  protocol: "smtp",
  command: "RCPT TO",
  operation: "mail:send",
  folder: null,
  target: null,
  decision: "deny",
  rule: null,
  ruleIndex: null,
  reason: "r",
  configRevision: "x",
};

function fixture() {
  const dir = mkdtempSync(join(tmpdir(), "mg-follow-rotated-"));
  dirs.push(dir);
  const file = join(dir, "m.toml");
  writeFileSync(file, readFileSync(join(ROOT, "examples/seed.toml")));
  return { dir, file, db: join(dir, "mailgator-audit.db") };
}

/** `mailgator audit -c FILE --follow ...args`; `until` waits for text on stdout (or stderr). */
function follow(file: string, args: string[]) {
  const child = Bun.spawn([process.execPath, MAIN, "audit", "-c", file, "--follow", ...args], {
    stdout: "pipe",
    stderr: "pipe",
  });
  let out = "";
  let err = "";
  const pump = async (s: ReadableStream<Uint8Array>, add: (t: string) => void) => {
    const d = new TextDecoder();
    for await (const chunk of s) add(d.decode(chunk));
  };
  void pump(child.stdout, (t) => (out += t));
  void pump(child.stderr, (t) => (err += t));
  return {
    async until(needle: string, where: "out" | "err" = "out") {
      const deadline = Date.now() + 15_000;
      while (!(where === "out" ? out : err).includes(needle)) {
        if (Date.now() > deadline) throw new Error(`no ${needle} in ${where}: ${out} / ${err}`);
        await Bun.sleep(50);
      }
    },
    out: () => out,
    err: () => err,
    stop: () => child.kill(),
  };
}

/** serve's rotation: the log closed, its files moved to another folder, a new log opened at the same path. */
async function rotate(dir: string, db: string, log: AuditLog): Promise<AuditLog> {
  await log.close();
  const old = join(dir, "old");
  mkdirSync(old);
  for (const name of readdirSync(dir))
    if (name.startsWith("mailgator-audit.db")) renameSync(join(dir, name), join(old, name));
  return AuditLog.open(db);
}

test("--follow prints the rows of the new file once the log is rotated, and says so", async () => {
  const { dir, file, db } = fixture();
  let log = AuditLog.open(db);
  await log.durable({ ...ev, target: "before@x.test" });
  const f = follow(file, ["--json"]);
  try {
    await f.until("before@x.test");
    log = await rotate(dir, db, log);
    await log.durable({ ...ev, target: "after@x.test" });
    await f.until("after@x.test");
    const targets = f
      .out()
      .trim()
      .split("\n")
      .map((l) => (JSON.parse(l) as { target: string }).target);
    expect(targets).toEqual(["before@x.test", "after@x.test"]);
    // With --json the note is on stderr, stdout stays one JSON object per line.
    expect(f.err()).toContain(`${db} is another file now`);
  } finally {
    f.stop();
    await log.close();
  }
});

test("--follow waits for the log to come back after it is moved away, then prints its rows", async () => {
  const { dir, file, db } = fixture();
  const log = AuditLog.open(db);
  await log.durable({ ...ev, target: "first@x.test" });
  await log.close();
  const f = follow(file, []);
  let next: AuditLog | null = null;
  try {
    await f.until("first@x.test");
    mkdirSync(join(dir, "old"));
    for (const name of readdirSync(dir))
      if (name.startsWith("mailgator-audit.db")) renameSync(join(dir, name), join(dir, "old", name));
    await f.until("is another file now");
    next = AuditLog.open(db);
    await next.durable({ ...ev, agent: "second", target: "second@x.test" });
    await f.until("second@x.test");
    expect(f.out()).toContain("second@x.test");
  } finally {
    f.stop();
    await next?.close();
  }
});

test("--follow does not print a row twice when the log it followed is moved back to the path", async () => {
  const { dir, file, db } = fixture();
  let log = AuditLog.open(db);
  for (const target of ["one@x.test", "two@x.test"]) await log.durable({ ...ev, target });
  await log.close();
  const f = follow(file, ["--json"]);
  try {
    await f.until("two@x.test");
    mkdirSync(join(dir, "old"));
    const names = readdirSync(dir).filter((name) => name.startsWith("mailgator-audit.db"));
    for (const name of names) renameSync(join(dir, name), join(dir, "old", name));
    await f.until("is another file now", "err");
    // The same file, back where it was (a move undone): its ids go on, so do the rows printed.
    for (const name of names) renameSync(join(dir, "old", name), join(dir, name));
    log = AuditLog.open(db);
    await log.durable({ ...ev, target: "three@x.test" });
    await f.until("three@x.test");
    await Bun.sleep(1_000);
    const targets = f
      .out()
      .trim()
      .split("\n")
      .map((l) => (JSON.parse(l) as { target: string }).target);
    expect(targets).toEqual(["one@x.test", "two@x.test", "three@x.test"]);
    expect(f.err()).toContain(`${db} is the file followed before, back: going on after row #2`);
  } finally {
    f.stop();
    await log.close();
  }
});
