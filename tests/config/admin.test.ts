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
    '5:14 admin.token_hash: expected "sha256:" and 64 hex digits (from `mailgator token new admin`)',
  ]);
  expect(problems(`${BASE}[admin]\nlisten = "127.0.0.1:1"\n`)[0]).toStartWith("5:10 admin.listen: unknown key");
  expect(problems(`${BASE}[admin]\nlisten_addr = "127.0.0.1"\n`)[0]).toStartWith("5:15 admin.listen_addr: expected");
  const hash = `sha256:${"a".repeat(64)}`;
  expect(parseConfig(`${BASE}[admin]\ntoken_hash = "${hash}"\n`, "/x.toml").admin?.tokenHash).toBe(hash);
});
