/** `[limits]` (docs/config.md): defaults, `[limits]` for both listeners, per-protocol overrides, errors, warnings. */

import { describe, expect, test } from "bun:test";
import { ConfigError, parseConfig } from "../../src/config/index.ts";
import { DEFAULT_LIMITS } from "../../src/config/limits.ts";

function problems(text: string): string {
  try {
    parseConfig(text, "/cfg/mailgator.toml");
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return (e as ConfigError).message;
  }
  throw new Error("expected a ConfigError");
}

describe("[limits]", () => {
  test("without it, every default; per-address defaults are half the totals", () => {
    const c = parseConfig("", "/x.toml");
    expect(c.limits).toEqual(DEFAULT_LIMITS);
    expect(c.limits.imap).toEqual({
      maxConnections: 256,
      maxConnectionsPerIp: 128,
      maxSessionsPerAgent: 10,
      loginTimeoutMs: 180_000,
      idleTimeoutMs: 1_800_000,
      idleCommandTimeoutMs: 3_600_000,
    });
    expect(c.limits.smtp).toEqual({
      maxConnections: 100,
      maxConnectionsPerIp: 50,
      maxSessionsPerAgent: 10,
      loginTimeoutMs: 180_000,
      idleTimeoutMs: 300_000,
    });
  });

  test("[limits] applies to both listeners; [limits.imap] and [limits.smtp] override it; seconds in the file", () => {
    const c = parseConfig(
      `[limits]\nmax_connections_per_ip = 8\nlogin_timeout = 30\n\n` +
        `[limits.imap]\nmax_connections_per_ip = 16\nidle_command_timeout = 600\n\n` +
        `[limits.smtp]\nidle_timeout = 60\nmax_connections = 20\n`,
      "/x.toml",
    );
    expect(c.limits.imap).toMatchObject({
      maxConnections: 256,
      maxConnectionsPerIp: 16,
      loginTimeoutMs: 30_000,
      idleTimeoutMs: 1_800_000,
      idleCommandTimeoutMs: 600_000,
    });
    expect(c.limits.smtp).toMatchObject({
      maxConnections: 20,
      maxConnectionsPerIp: 8,
      loginTimeoutMs: 30_000,
      idleTimeoutMs: 60_000,
    });
    expect(c.warnings.filter((w) => w.includes("[limits]"))).toEqual([]);
  });

  test("errors name file, line and column: not whole, below 1, above a day, unknown keys", () => {
    const message = problems(
      `[limits]\nmax_connections = 0\nidle_timeout = 1.5\n\n` +
        `[limits.smtp]\nlogin_timeout = 86401\nidle_command_timeout = 5\n\n` +
        `[limits.imap]\nmax_conections = 3\n`,
    );
    expect(message).toContain("/cfg/mailgator.toml:2:19: limits.max_connections: expected a number ≥ 1, got 0");
    expect(message).toContain("/cfg/mailgator.toml:3:16: limits.idle_timeout: expected a whole number, got 1.5");
    expect(message).toContain(
      "/cfg/mailgator.toml:6:17: limits.smtp.login_timeout: expected a number ≤ 86400, got 86401",
    );
    expect(message).toContain(
      '/cfg/mailgator.toml:7:24: limits.smtp.idle_command_timeout: unknown key "idle_command_timeout"',
    );
    expect(message).toContain('/cfg/mailgator.toml:10:18: limits.imap.max_conections: unknown key "max_conections"');
    expect(problems(`[limits]\nmax_sessions_per_agent = "10"\n`)).toContain(
      '/cfg/mailgator.toml:2:26: limits.max_sessions_per_agent: expected number, got "10"',
    );
  });

  test("a per-address limit that is not below the total loads with a warning", () => {
    const c = parseConfig(`[limits.smtp]\nmax_connections = 10\nmax_connections_per_ip = 10\n`, "/x.toml");
    expect(c.limits.smtp.maxConnectionsPerIp).toBe(10);
    expect(c.warnings).toContain(
      "[limits] smtp: max_connections_per_ip (10) is not below max_connections (10): " +
        "one client address can take every SMTP connection",
    );
  });
});
