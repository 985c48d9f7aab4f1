/**
 * `allowed_ips = []` (docs/config.md "Errors": an empty list is refused). Omitted, `allowed_ips` admits every
 * address; empty, it admitted none (src/net/ip.ts `ipAllowed`), so the agent's every login failed with the same
 * reply as a wrong token, and `check` called the config valid. It is now a config error at the key.
 */

import { expect, test } from "bun:test";
import { parseConfig } from "../../src/config/index.ts";
import { ipAllowed } from "../../src/net/ip.ts";

const HASH = `sha256:${"a".repeat(64)}`;
const agent = (ips: string) =>
  `[accounts.m]\nusername = "u"\npassword = "p"\n[[agents]]\nname = "bot"\ntoken_hash = "${HASH}"\n` +
  `account = "m"\n${ips}`;

function problems(toml: string): string {
  try {
    parseConfig(toml, "/x/mailgator.toml", { env: {} });
    return "";
  } catch (error) {
    return (error as Error).message;
  }
}

test("an empty allowed_ips admits no address, where an omitted one admits all", () => {
  expect(ipAllowed("127.0.0.1", [])).toBe(false);
  expect(ipAllowed("127.0.0.1", null)).toBe(true);
});

test("allowed_ips = [] is refused at the key; omitted or with an entry it loads", () => {
  expect(problems(agent("allowed_ips = []\n"))).toContain(
    "mailgator.toml:8:15: agents[0].allowed_ips: an empty list admits no address",
  );
  expect(problems(agent(""))).toBe("");
  expect(problems(agent('allowed_ips = ["127.0.0.1"]\n'))).toBe("");
});
