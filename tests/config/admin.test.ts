/** `[admin]` (docs/config.md): off without the table, loopback by default, remote only with allow_remote. */
import { expect, test } from "bun:test";
import { ConfigError, parseConfig } from "../../src/config/index.ts";

const BASE = '[smtp]\nlisten_addr = "127.0.0.1:2525"\nupstream_addr = "127.0.0.1:587"\n';

function problems(text: string): string[] {
  try {
    parseConfig(text, "/etc/mailgator.toml");
  } catch (e) {
    if (e instanceof ConfigError) return e.problems.map((p) => `${p.line}:${p.column} ${p.path}: ${p.message}`);
    throw e;
  }
  return [];
}

test("no [admin]: nothing listens; an empty [admin]: 127.0.0.1:9925, no token", () => {
  expect(parseConfig(BASE, "/x.toml").admin).toBeNull();
  expect(parseConfig(`${BASE}[admin]\n`, "/x.toml").admin).toEqual({
    listenAddr: { host: "127.0.0.1", port: 9925 },
    allowRemote: false,
    tokenHash: null,
  });
});

test("a non-loopback address needs allow_remote = true, and then warns", () => {
  expect(problems(`${BASE}[admin]\nlisten_addr = "0.0.0.0:9925"\n`)).toEqual([
    "5:15 admin.listen_addr: 0.0.0.0 is not a loopback address: health and metrics need no token, " +
      "so listening there needs allow_remote = true",
  ]);
  const config = parseConfig(`${BASE}[admin]\nlisten_addr = "0.0.0.0:9925"\nallow_remote = true\n`, "/x.toml");
  expect(config.admin?.listenAddr).toEqual({ host: "0.0.0.0", port: 9925 });
  expect(config.warnings.some((w) => w.includes("[admin] listens on 0.0.0.0:9925"))).toBe(true);
});

test("token_hash as agents' tokens; unknown keys and bad addresses are errors at their place", () => {
  expect(problems(`${BASE}[admin]\ntoken_hash = "sha256:abc"\n`)).toEqual([
    '5:14 admin.token_hash: expected "sha256:" and 64 lowercase hex digits (from `mailgator token new admin`)',
  ]);
  expect(problems(`${BASE}[admin]\nlisten = "127.0.0.1:1"\n`)[0]).toStartWith("5:10 admin.listen: unknown key");
  expect(problems(`${BASE}[admin]\nlisten_addr = "127.0.0.1"\n`)[0]).toStartWith("5:15 admin.listen_addr: expected");
  const hash = `sha256:${"a".repeat(64)}`;
  expect(parseConfig(`${BASE}[admin]\ntoken_hash = "${hash}"\n`, "/x.toml").admin?.tokenHash).toBe(hash);
});

// Loopback is decided from an IP literal or the exact name localhost, never by a prefix of the text.
test("a name that starts like a loopback address is not loopback: it needs allow_remote", () => {
  for (const host of ["127.attacker.example", "127.0.0.1.nip.io", "localhost.attacker.example", "::1.example"]) {
    const addr = host.includes(":") ? `[${host}]:9925` : `${host}:9925`;
    const found = problems(`${BASE}[admin]\nlisten_addr = "${addr}"\n`);
    if (host.includes(":")) expect(found[0]).toContain("admin.listen_addr: expected");
    else
      expect(found).toEqual([
        `5:15 admin.listen_addr: ${host} is not a loopback address: health and metrics need no token, ` +
          "so listening there needs allow_remote = true",
      ]);
  }
  for (const addr of ["127.0.0.1:9925", "127.5.6.7:9925", "[::1]:9925", "localhost:9925", "LOCALHOST:0"])
    expect(problems(`${BASE}[admin]\nlisten_addr = "${addr}"\n`)).toEqual([]);
  for (const addr of ["[::ffff:127.0.0.1]:9925", "[::2]:9925", "128.0.0.1:9925"])
    expect(problems(`${BASE}[admin]\nlisten_addr = "${addr}"\n`)[0]).toContain("is not a loopback address");
});

test("a plain listener on a name that starts like a loopback address warns", () => {
  const config = parseConfig('[smtp]\nlisten_addr = "127.attacker.example:2525"\nupstream_addr = "h:587"\n', "/x.toml");
  expect(config.warnings.some((w) => w.includes("[smtp] listens on 127.attacker.example:2525 without TLS"))).toBe(true);
  const local = parseConfig('[smtp]\nlisten_addr = "127.0.0.2:2525"\nupstream_addr = "h:587"\n', "/x.toml");
  expect(local.warnings.some((w) => w.includes("without TLS"))).toBe(false);
});
