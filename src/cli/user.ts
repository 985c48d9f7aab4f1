/**
 * Who runs this process, for the audit rows that say who acted (`approved by cli:NAME`, docs/approvals.md; the admin
 * MCP server's config edits, docs/mcp.md). The runtime's `os.userInfo().username` reads `$USER` and answers
 * "unknown" without it (a root shell from `sudo -i` or `su -` keeps it, a cron job or `env -i` does not): the name
 * is taken from the password database's entry for the process's user id instead (passwd(5)), and when there is none
 * the row says `uid N`, never a name the process was not run as.
 */

import { readFileSync } from "node:fs";

const PASSWD = "/etc/passwd";

/** The name of user id `uid` in `passwd` (the text of /etc/passwd), or null when no entry has that id. */
export function nameOfUid(passwd: string, uid: number): string | null {
  for (const line of passwd.split("\n")) {
    const fields = line.split(":");
    if (fields.length >= 3 && fields[0] !== "" && fields[2] === String(uid)) return fields[0]!;
  }
  return null;
}

/** This process's user, by name where the password database has one, else `uid N`. */
export function currentUser(passwdFile = PASSWD): string {
  const uid = process.getuid?.() ?? -1;
  let passwd = "";
  try {
    passwd = readFileSync(passwdFile, "utf8");
  } catch {
    // No password database (a minimal container): the id says who.
  }
  return nameOfUid(passwd, uid) ?? `uid ${uid}`;
}
