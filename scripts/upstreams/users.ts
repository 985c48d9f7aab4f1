/**
 * Test users: one line in Dovecot's passwd-file (re-read by Dovecot whenever it changes, so
 * no reload) and a Maildir with the special-use folders, owned by the mail uid.
 */
import { chownSync, existsSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import type { UpstreamUser } from "./description.ts";
import { FOLDERS, MAIL_UID, splitAddress, userMaildir } from "./layout.ts";

export interface UserStore {
  readonly usersDir: string;
  readonly maildirRoot: string;
}

/** The Maildir++ directory of a folder (`Archive/2025` → `<maildir>/.Archive.2025`); INBOX is the root. */
export function folderPath(maildir: string, folder: string): string {
  if (folder.toUpperCase() === "INBOX") return maildir;
  if (folder.includes(".")) throw new Error(`upstreams: folder "${folder}": "." is the on-disk separator of Maildir++`);
  return join(maildir, `.${folder.split("/").join(".")}`);
}

/** Creates a folder's cur/new/tmp (and parents) owned by the mail uid; a no-op when it exists. */
export function ensureFolder(maildir: string, folder: string): string {
  const path = folderPath(maildir, folder);
  if (existsSync(join(path, "cur"))) return path;
  ensureOwnedDir(maildir);
  ensureOwnedDir(path);
  for (const sub of ["cur", "new", "tmp"]) ensureOwnedDir(join(path, sub));
  if (path !== maildir) {
    const marker = join(path, "maildirfolder");
    writeFileSync(marker, "");
    chownSync(marker, MAIL_UID, MAIL_UID);
    subscribe(maildir, folder);
  }
  return path;
}

function subscribe(maildir: string, folder: string): void {
  // Dovecot still reads the one-name-per-line subscriptions format.
  const file = join(maildir, "subscriptions");
  const names = existsSync(file) ? readFileSync(file, "utf8").split("\n").filter(Boolean) : [];
  if (names.includes(folder)) return;
  writeFileSync(file, [...names, folder].join("\n") + "\n");
  chownSync(file, MAIL_UID, MAIL_UID);
}

/** mkdir -p where every directory created belongs to the mail uid. */
export function ensureOwnedDir(path: string): void {
  if (existsSync(path)) return;
  ensureOwnedDir(dirname(path));
  mkdirSync(path, { mode: 0o700 });
  chownSync(path, MAIL_UID, MAIL_UID);
}

function passwdLine(address: string, password: string, home: string): string {
  if (/[:\n]/.test(password) || /[:\n\s/]/.test(address))
    throw new Error(`upstreams: user "${address}": no ":", "/", spaces or line breaks allowed`);
  return `${address}:{PLAIN}${password}:${MAIL_UID}:${MAIL_UID}::${home}::`;
}

/**
 * Adds (or updates the password of) a user and creates its Maildir with INBOX, Drafts, Sent,
 * Trash, Junk and Archive. The user's passwd-file is replaced atomically (rename), so Dovecot
 * never reads half a line; parallel test workers each write their own file.
 */
export function addUser(store: UserStore, address: string, password: string): UpstreamUser {
  const [local, domain] = splitAddress(address);
  const user = `${local}@${domain}`;
  const maildir = userMaildir(store.maildirRoot, user);
  for (const folder of FOLDERS) ensureFolder(maildir, folder);
  const file = join(store.usersDir, user);
  const { gid } = statSync(store.usersDir);
  const temporary = join(store.usersDir, `.new-${process.pid}-${Math.random().toString(36).slice(2)}`);
  writeFileSync(temporary, `${passwdLine(user, password, dirname(maildir))}\n`, { mode: 0o640 });
  chownSync(temporary, 0, gid);
  renameSync(temporary, file);
  return { user, password, address: user, maildir };
}

/**
 * Adds a second login for an existing user's mailbox: `login` (lower case, no `@`: a server's account name, which it
 * maps to a mailbox itself) with its own password, reading the same Maildir as `user`.
 */
export function addLogin(store: UserStore, login: string, password: string, user: UpstreamUser): void {
  if (login.includes("@") || login !== login.toLowerCase())
    throw new Error(`upstreams: login "${login}": lower case, without "@"`);
  const { gid } = statSync(store.usersDir);
  const temporary = join(store.usersDir, `.new-${process.pid}-${Math.random().toString(36).slice(2)}`);
  writeFileSync(temporary, `${passwdLine(login, password, dirname(user.maildir))}\n`, { mode: 0o640 });
  chownSync(temporary, 0, gid);
  renameSync(temporary, join(store.usersDir, login));
}

if (import.meta.main) {
  // bun scripts/upstreams/users.ts ADDRESS PASSWORD [--dir D]
  const { layout } = await import("./layout.ts");
  const args = process.argv.slice(2);
  const dirIndex = args.indexOf("--dir");
  const dir = dirIndex >= 0 ? args.splice(dirIndex, 2)[1] : undefined;
  const [address, password] = args;
  if (address === undefined || password === undefined) {
    console.error("usage: bun scripts/upstreams/users.ts ADDRESS PASSWORD [--dir D]");
    process.exit(2);
  }
  const paths = layout(dir);
  console.log(JSON.stringify(addUser(paths, address, password), null, 2));
}
