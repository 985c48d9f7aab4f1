/**
 * Files written under a temporary name and then renamed or linked into place (docs/operations.md "Leftovers"): the
 * pid files' and the reload status file's beside the audit and state databases (src/runtime/state-files.ts), the
 * config's and its backup's beside the config (src/mcp/admin-edit.ts, a copy of the config, which may hold
 * secrets). A process killed between the write and the rename left such a file for good. A real `serve` start now
 * removes those of processes that are gone, and so does `mcp --admin --allow-config-writes`; nothing else: not one
 * whose process is alive, not a symbolic link, not one written after the process started, not a name one character
 * off, not a folder.
 */
import { expect, setDefaultTimeout, test } from "bun:test";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, symlinkSync, utimesSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ALLOCATOR_ENV } from "../../src/cli/allocator.ts";
import { cleanExit } from "../e2e/serve-child.ts";
import { smtpListener } from "../fixtures/index.ts";
import { tempRoot } from "../fixtures/temp.ts";

const TMP = tempRoot("mg-start-leftovers-");
const MAIN = join(import.meta.dir, "../../src/cli/main.ts");
setDefaultTimeout(30_000);

/** The pid of a process that has exited (and that no process has taken since). */
async function deadPid(): Promise<number> {
  const p = Bun.spawn(["true"]);
  await p.exited;
  expect(() => process.kill(p.pid, 0)).toThrow();
  return p.pid;
}

const HEX = "0123456789ab";

/** The temporary names of each file, for a pid: what a process stopped before its rename leaves. */
function leftoverNames(pid: number): { data: string[]; config: string[] } {
  return {
    data: [
      `mailgator.pid.${pid}.tmp`,
      `mailgator.pid.${pid}.stale`,
      `mailgator.reload.json.${pid}.tmp`,
      `mailgator-state.db.pid.${pid}.tmp`,
      `mailgator-state.db.pid.${pid}.stale`,
    ],
    config: [`.mailgator.toml.${pid}.${HEX}.tmp`, `.mailgator.toml.bak.${pid}.${HEX}.tmp`],
  };
}

/** A config with just the SMTP proxy, in `configDir`, whose audit database (and state database) is in `dataDir`. */
function setup(): { configDir: string; dataDir: string; config: string } {
  const configDir = mkdtempSync(join(TMP, "etc-"));
  const dataDir = mkdtempSync(join(TMP, "var-"));
  const config = join(configDir, "mailgator.toml");
  writeFileSync(
    config,
    `${smtpListener()}\n[audit]\npath = "${join(dataDir, "audit.db")}"\n\n[[rules]]\nname = "all"\naction = "deny"\n`,
    { mode: 0o600 },
  );
  return { configDir, dataDir, config };
}

/** Writes `names` in `dir` as a killed process would have left them (a copy of the config: its mode). */
function plant(dir: string, names: readonly string[]): void {
  for (const n of names) writeFileSync(join(dir, n), 'password = "secret"\n', { mode: 0o600 });
}

/** Files that must stay, whatever the start does; returns their names by folder. */
async function keepers(configDir: string, dataDir: string, dead: number): Promise<Record<string, string[]>> {
  const [recentPid, dirPid, linkPid] = [await deadPid(), await deadPid(), await deadPid()];
  const live = leftoverNames(process.pid); // this test's process is alive: it may be writing them
  const recent = leftoverNames(recentPid); // no such process, but written after the start (below)
  const linked = leftoverNames(linkPid);
  const folders = leftoverNames(dirPid);
  const offByOne = {
    data: [
      `mailgator.pid.${dead}.tmpx`,
      `mailgator.pid.${dead}.tm`,
      `mailgator.pid.${dead}.stal`,
      `xmailgator.pid.${dead}.tmp`,
      `mailgator.pi.${dead}.tmp`,
      `mailgator.pid.${dead}0x.tmp`,
      `mailgator.pid.0${dead}.tmp`,
      `mailgator.pid.${dead}_tmp`,
      `mailgator.reload.json.${dead}.stale`,
      `audit.db.${dead}.tmp`,
    ],
    config: [
      `mailgator.toml.${dead}.${HEX}.tmp`,
      `.mailgator.toml.${dead}.${HEX.slice(1)}.tmp`,
      `.mailgator.toml.${dead}.${HEX}a.tmp`,
      `.mailgator.toml.${dead}.${HEX.toUpperCase()}.tmp`,
      `.mailgator.toml.${dead}.${HEX}.tmpx`,
      `.mailgator.toml.${dead}.tmp`,
      `.mailgator.toml.${dead}.${HEX}.stale`,
      `.other.toml.${dead}.${HEX}.tmp`,
    ],
  };
  const future = new Date(Date.now() + 3600_000);
  const target = join(TMP, `target-${dead}`);
  writeFileSync(target, "not a leftover\n");
  const out: Record<string, string[]> = {};
  for (const [dir, which] of [
    [dataDir, "data"],
    [configDir, "config"],
  ] as const) {
    plant(dir, [...live[which], ...recent[which], ...offByOne[which]]);
    for (const n of recent[which]) utimesSync(join(dir, n), future, future);
    for (const n of linked[which]) symlinkSync(target, join(dir, n));
    for (const n of folders[which]) mkdirSync(join(dir, n));
    out[dir] = [...live[which], ...recent[which], ...offByOne[which], ...linked[which], ...folders[which]];
  }
  return out;
}

/** Runs serve until it listens, then stops it with SIGTERM; returns its log. */
async function serveOnce(config: string): Promise<string> {
  const env: Record<string, string | undefined> = { ...process.env };
  for (const name of Object.keys(ALLOCATOR_ENV)) delete env[name];
  const proc = Bun.spawn([process.execPath, MAIN, "serve", "-c", config, "--log-format", "json"], {
    stdout: "pipe",
    stderr: "pipe",
    env,
  });
  let text = "";
  const reader = (proc.stderr as ReadableStream<Uint8Array>).getReader();
  void (async () => {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      text += new TextDecoder().decode(value);
    }
  })();
  try {
    for (let i = 0; i < 200 && !/SMTP proxy listening/.test(text); i++) {
      if (proc.exitCode !== null) break;
      await Bun.sleep(50);
    }
    expect(text).toContain("SMTP proxy listening");
  } finally {
    proc.kill("SIGTERM");
  }
  await cleanExit({ proc, logs: () => text });
  return text;
}

test("a serve start removes the temporary files of processes that are gone, and nothing else", async () => {
  const { configDir, dataDir, config } = setup();
  const dead = await deadPid();
  const left = leftoverNames(dead);
  plant(dataDir, left.data);
  plant(configDir, left.config);
  const kept = await keepers(configDir, dataDir, dead);

  await serveOnce(config);

  for (const n of left.data) expect(existsSync(join(dataDir, n))).toBe(false);
  for (const n of left.config) expect(existsSync(join(configDir, n))).toBe(false);
  expect(readdirSync(configDir).sort()).toEqual(["mailgator.toml", ...kept[configDir]!].sort());
  // What serve makes of its own in the data folder (the audit and state databases) is beside the point here.
  const data = readdirSync(dataDir);
  for (const n of kept[dataDir]!) expect(data).toContain(n);
  expect(data.filter((n) => /\.(tmp|stale)$/.test(n)).sort()).toEqual(
    kept[dataDir]!.filter((n) => /\.(tmp|stale)$/.test(n)).sort(),
  );
});

test("mcp --admin --allow-config-writes removes the config's temporary files of processes that are gone", async () => {
  const { configDir, dataDir, config } = setup();
  const dead = await deadPid();
  const left = leftoverNames(dead);
  plant(configDir, left.config);
  const kept = await keepers(configDir, dataDir, dead);

  const env: Record<string, string | undefined> = { ...process.env };
  for (const name of Object.keys(env)) if (/^MAILGATOR_(TOKEN|PASSWORD)/.test(name)) delete env[name];
  // stdin at its end at once: the server stops when the client closes it.
  const run = Bun.spawnSync([process.execPath, MAIN, "mcp", "--admin", "-c", config, "--allow-config-writes"], {
    stdin: "ignore",
    env,
  });
  expect(run.exitCode).toBe(0);

  expect(readdirSync(configDir).sort()).toEqual(["mailgator.toml", ...kept[configDir]!].sort());
});
