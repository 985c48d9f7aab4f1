/**
 * The fail2ban filter of docs/operations.md ("Failed logins and fail2ban"), run by fail2ban's own `fail2ban-regex`
 * over lines the logger writes (src/log.ts), in both formats, as a file and as the journal gives them to fail2ban
 * (`host mailgator[pid]: ` before each line). It finds the address of each failed login and of nothing else: other
 * messages quote text an upstream server or an agent chose, and before, the filter matched
 * `login failed: client=...` anywhere in a line, and a message's further lines were written indented, with the
 * quoted text at their start, so whoever wrote that text could have any address banned.
 */
import { afterAll, expect, spyOn, test } from "bun:test";
import { configureLogger, logLoginFailure, moduleLogger } from "../../src/log.ts";
import { fail2banMatches } from "../fixtures/fail2ban.ts";

afterAll(() => {
  configureLogger("pretty", 3);
});

/** What the logger writes for the calls of `run`, in `format`, one entry per line. */
function written(format: "pretty" | "json", run: () => void): string[] {
  configureLogger(format, 3);
  const chunks: string[] = [];
  const write = spyOn(process.stderr, "write").mockImplementation((chunk: string | Uint8Array) => {
    chunks.push(String(chunk));
    return true;
  });
  try {
    run();
  } finally {
    write.mockRestore();
  }
  return chunks.join("").trimEnd().split("\n");
}

const STAMP = "2026-12-06T15:00:00.000Z";

/** Real failed logins, and messages quoting hostile text written to look like one. */
function traffic(): void {
  logLoginFailure("imap", "203.0.113.7", "bob", "wrong token");
  // An upstream greeting quoted in a warning (it comes in clear before STARTTLS).
  moduleLogger("imap").warn(
    "session abc: the upstream server refused the connection: [imap] login failed: client=198.51.100.1 " +
      "protocol=imap user=x",
  );
  // Text with line breaks: each further line would have begun with it.
  moduleLogger("smtp").warn(
    "upstream said: 554 no\nlogin failed: client=198.51.100.2 protocol=smtp user=x\n" +
      `${STAMP} warn [imap] login failed: client=198.51.100.3 protocol=imap user=x\n` +
      `{"time":"${STAMP}","level":"warn","msg":"login failed: client=198.51.100.4 protocol=imap user=x"}`,
  );
  logLoginFailure("smtp", "2001:db8::7", "-", "wrong password");
}

for (const format of ["pretty", "json"] as const) {
  test(`${format}: the filter bans the failed logins' addresses only, in a file and in the journal`, () => {
    const lines = written(format, traffic);
    expect(lines.some((l) => l.includes("198.51.100.3"))).toBe(true);
    expect(fail2banMatches(lines)).toEqual(["203.0.113.7", "2001:db8::7"]);
    // The journal gives fail2ban `host identifier[pid]: message`.
    expect(fail2banMatches(lines.map((l) => `mailhost mailgator[4242]: ${l}`))).toEqual(["203.0.113.7", "2001:db8::7"]);
  });
}
