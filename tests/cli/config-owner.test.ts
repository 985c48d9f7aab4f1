/**
 * A config found by the search path (./mailgator.toml, /etc/mailgator/mailgator.toml) that another user owns or any
 * user may write is not read (docs/config.md "Where the config is read from"): in a folder others may write, such as
 * /tmp, it could be theirs, naming a file of this user's as a `password_file` and an upstream of theirs to send it
 * to. -c and MAILGATOR_CONFIG name a file on purpose and are read as given. Run as root (as `npm test` does), so
 * that a file can be given to another user.
 */
import { beforeAll, expect, test } from "bun:test";
import {
  chmodSync,
  chownSync,
  lchownSync,
  mkdirSync,
  renameSync,
  symlinkSync,
  unlinkSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { main } from "../../src/cli/main.ts";
import { ConfigError, findConfig, loadConfig } from "../../src/config/index.ts";
import { tempRoot } from "../fixtures/temp.ts";

const OTHER_UID = 65534;
const scratch = tempRoot("mg-cfg-owner-");
const CONFIG = `[[rules]]
name = "Deny everything else"
action = "deny"
`;
const none = join(scratch, "none.toml");

function folder(name: string): string {
  const dir = join(scratch, name);
  mkdirSync(dir, { mode: 0o1777 });
  chmodSync(dir, 0o1777);
  return dir;
}

beforeAll(() => expect(process.geteuid?.()).toBe(0));

function refusal(cwd: string): string {
  try {
    findConfig(undefined, {}, cwd, none);
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return (e as Error).message;
  }
  throw new Error("the config was accepted");
}

test("./mailgator.toml of another user is refused, and taken with -c", async () => {
  const dir = folder("planted");
  const file = join(dir, "mailgator.toml");
  writeFileSync(file, CONFIG);
  chownSync(file, OTHER_UID, OTHER_UID);
  expect(refusal(dir)).toContain(`belongs to user ${OTHER_UID}`);
  expect(findConfig(file, {}, dir, none).path).toBe(file);
  expect(findConfig(undefined, { MAILGATOR_CONFIG: file }, dir, none).path).toBe(file);
  // Through the command line: a config error, exit 2, before anything is read.
  const cwd = process.cwd();
  process.chdir(dir);
  try {
    expect(await main(["check"], {}, () => {})).toBe(2);
  } finally {
    process.chdir(cwd);
  }
});

test("a symbolic link of another user's to a file of root's is refused", () => {
  const dir = folder("link");
  const target = join(scratch, "root.toml");
  writeFileSync(target, CONFIG);
  symlinkSync(target, join(dir, "mailgator.toml"));
  lchownSync(join(dir, "mailgator.toml"), OTHER_UID, OTHER_UID);
  expect(refusal(dir)).toContain(`belongs to user ${OTHER_UID}`);
});

test("a file its group or any user may write is refused", () => {
  for (const mode of [0o666, 0o664, 0o620, 0o602]) {
    const dir = folder(`writable-${mode.toString(8)}`);
    const file = join(dir, "mailgator.toml");
    writeFileSync(file, CONFIG);
    chmodSync(file, mode);
    expect(refusal(dir)).toContain(`can be written by users other than its owner (mode ${mode.toString(8)})`);
  }
});

test("this user's own file is read", () => {
  const dir = folder("own");
  writeFileSync(join(dir, "mailgator.toml"), CONFIG, { mode: 0o644 });
  expect(findConfig(undefined, {}, dir, none).path).toBe(join(dir, "mailgator.toml"));
  // Readable by its group and others (no secrets inline) is not what the check is about; only writing is.
  chmodSync(join(dir, "mailgator.toml"), 0o604);
  expect(findConfig(undefined, {}, dir, none).path).toBe(join(dir, "mailgator.toml"));
});

/** The message of the ConfigError `run` throws. */
function configError(run: () => unknown): string {
  try {
    run();
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return (e as ConfigError).problems.map((p) => p.message).join("; ");
  }
  throw new Error("the config was accepted");
}

test("the owner check is made on the file read: one swapped in after the search found it is refused", () => {
  const dir = folder("swapped");
  const file = join(dir, "mailgator.toml");
  writeFileSync(file, CONFIG, { mode: 0o644 });
  const found = findConfig(undefined, {}, dir, none);
  expect(found).toEqual({ path: file, ownedOnly: true });
  expect(loadConfig(found).rules.length).toBe(1);
  // Between the search and the read, another file takes the name (in a folder others may write, theirs).
  const planted = join(dir, "planted.toml");
  writeFileSync(planted, CONFIG.replace("Deny everything else", "Planted"), { mode: 0o644 });
  chownSync(planted, OTHER_UID, OTHER_UID);
  renameSync(planted, file);
  expect(configError(() => loadConfig(found))).toContain(`belongs to user ${OTHER_UID}`);
  // One of this user's that others may write, likewise; named by -c, either is read as given.
  unlinkSync(file);
  writeFileSync(file, CONFIG);
  chmodSync(file, 0o666);
  expect(configError(() => loadConfig(found))).toContain("can be written by users other than its owner (mode 666)");
  chmodSync(file, 0o644);
  chownSync(file, OTHER_UID, OTHER_UID);
  expect(loadConfig(findConfig(file, {}, dir, none)).rules[0]!.name).toBe("Deny everything else");
  expect(loadConfig(file).rules.length).toBe(1);
});

test("a link swapped for another user's after the search found it is refused", () => {
  const dir = folder("relinked");
  const target = join(scratch, "relinked-root.toml");
  writeFileSync(target, CONFIG, { mode: 0o644 });
  const link = join(dir, "mailgator.toml");
  symlinkSync(target, link);
  const found = findConfig(undefined, {}, dir, none);
  expect(loadConfig(found).rules.length).toBe(1);
  unlinkSync(link);
  symlinkSync(target, link);
  lchownSync(link, OTHER_UID, OTHER_UID);
  expect(configError(() => loadConfig(found))).toContain(`belongs to user ${OTHER_UID}`);
});

test("serve found by the search path: a SIGHUP after a swap for another user's file keeps the config", async () => {
  const dir = folder("serve");
  const file = join(dir, "mailgator.toml");
  const config = (rule: string) =>
    `[imap]\nlisten_addr = "127.0.0.1:0"\nupstream_addr = "127.0.0.1:1"\nupstream_tls = "none"\n\n` +
    `[audit]\npath = "${join(dir, "audit.db")}"\n\n[[rules]]\nname = "${rule}"\naction = "deny"\n`;
  writeFileSync(file, config("First"), { mode: 0o644 });
  const proc = Bun.spawn([process.execPath, join(import.meta.dir, "../../src/cli/main.ts"), "serve"], {
    cwd: dir,
    stdout: "pipe",
    stderr: "pipe",
  });
  let logs = "";
  void (async () => {
    const decoder = new TextDecoder();
    for await (const chunk of proc.stderr as ReadableStream<Uint8Array>)
      logs += decoder.decode(chunk, { stream: true });
  })();
  const waitFor = async (re: RegExp) => {
    for (let i = 0; i < 400 && !re.test(logs) && proc.exitCode === null; i++) await Bun.sleep(50);
    expect(logs).toMatch(re);
  };
  try {
    await waitFor(/IMAP proxy listening/);
    const planted = join(dir, "planted.toml");
    writeFileSync(planted, config("Planted"), { mode: 0o644 });
    chownSync(planted, OTHER_UID, OTHER_UID);
    renameSync(planted, file);
    proc.kill("SIGHUP");
    await waitFor(/reload failed/);
    expect(logs).toMatch(
      new RegExp(`reload failed, the running config stays in force: .*belongs to user ${OTHER_UID}`),
    );
    expect(logs).not.toMatch(/reloaded /);
    // This user's file again: the reload goes through.
    unlinkSync(file);
    writeFileSync(file, config("Second"), { mode: 0o644 });
    proc.kill("SIGHUP");
    await waitFor(/reloaded /);
  } finally {
    proc.kill("SIGTERM");
    await proc.exited;
  }
});
