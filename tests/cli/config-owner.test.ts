/**
 * A config found by the search path (./mailgator.toml, /etc/mailgator/mailgator.toml) that another user owns or any
 * user may write is not read (docs/config.md "Where the config is read from"): in a folder others may write, such as
 * /tmp, it could be theirs, naming a file of this user's as a `password_file` and an upstream of theirs to send it
 * to. -c and MAILGATOR_CONFIG name a file on purpose and are read as given. Run as root (as `npm test` does), so
 * that a file can be given to another user.
 */
import { beforeAll, expect, test } from "bun:test";
import { chmodSync, chownSync, lchownSync, mkdirSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { main } from "../../src/cli/main.ts";
import { ConfigError, findConfig } from "../../src/config/index.ts";
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
  expect(findConfig(file, {}, dir, none)).toBe(file);
  expect(findConfig(undefined, { MAILGATOR_CONFIG: file }, dir, none)).toBe(file);
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
  expect(findConfig(undefined, {}, dir, none)).toBe(join(dir, "mailgator.toml"));
  // Readable by its group and others (no secrets inline) is not what the check is about; only writing is.
  chmodSync(join(dir, "mailgator.toml"), 0o604);
  expect(findConfig(undefined, {}, dir, none)).toBe(join(dir, "mailgator.toml"));
});
