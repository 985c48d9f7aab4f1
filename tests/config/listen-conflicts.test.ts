/**
 * Two listeners of one config on the same port (docs/config.md "One port per listener"): `[imap]`, `[smtp]` and
 * `[admin]` each bind their `listen_addr` when serve starts, and a second bind of a port taken fails with EADDRINUSE.
 * The config is refused when it loads, naming both settings, so that `check` refuses what `serve` could not start.
 * Which pairs conflict is held to the kernel's answer: each pair the loader refuses fails to bind here, and each one
 * it accepts binds.
 */

import { describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { join } from "node:path";
import { ConfigError, parseConfig } from "../../src/config/index.ts";
import { tempRoot } from "../fixtures/temp.ts";

const TMP = tempRoot("mg-listen-");

function config(imap: string, smtp: string, admin?: string): string {
  return (
    `[imap]\nlisten_addr = "${imap}"\nupstream_addr = "127.0.0.1:993"\n` +
    `[smtp]\nlisten_addr = "${smtp}"\nupstream_addr = "127.0.0.1:587"\n` +
    (admin === undefined ? "" : `[admin]\nlisten_addr = "${admin}"\nallow_remote = true\n`) +
    `[[rules]]\nname = "r"\naction = "allow"\n`
  );
}

function problems(text: string): string[] {
  try {
    parseConfig(text, "/etc/mailgator.toml", { env: {} });
  } catch (e) {
    if (e instanceof ConfigError) return e.problems.map((p) => `${p.line}:${p.column} ${p.path}: ${p.message}`);
    throw e;
  }
  return [];
}

const at = (host: string, port: number): string => (host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`);

/** Host pairs that cannot both listen on one port (Linux, with the dual-stack `::` Node and Bun bind by default). */
const CONFLICTS: [string, string][] = [
  ["127.0.0.1", "127.0.0.1"],
  ["0.0.0.0", "127.0.0.1"],
  ["127.0.0.1", "0.0.0.0"],
  ["::", "0.0.0.0"],
  ["0.0.0.0", "::"],
  ["::", "127.0.0.1"],
  ["::", "::1"],
  ["::1", "0:0:0:0:0:0:0:1"],
  ["::ffff:127.0.0.1", "127.0.0.1"],
  ["0.0.0.0", "::ffff:127.0.0.1"],
];
/** Host pairs that can. */
const APART: [string, string][] = [
  ["127.0.0.1", "127.0.0.2"],
  ["0.0.0.0", "::1"],
  ["127.0.0.1", "::1"],
];

describe("two listeners on one port are a config error naming both settings", () => {
  for (const [a, b] of CONFLICTS)
    test(`${a} and ${b}`, () => {
      expect(problems(config(at(a, 1993), at(b, 1993)))).toEqual([
        `5:15 smtp.listen_addr: "${at(b, 1993)}" takes the port that [imap] listen_addr "${at(a, 1993)}" ` +
          "listens on: serve could bind only one of them (0.0.0.0 takes the port on every IPv4 address, :: on " +
          "every address; localhost may be 127.0.0.1 or ::1). Give each listener a port of its own",
      ]);
    });

  test("[admin] against either proxy, also at its default address", () => {
    expect(problems(config("127.0.0.1:1993", "127.0.0.1:1587", "0.0.0.0:1587"))[0]).toStartWith(
      '8:15 admin.listen_addr: "0.0.0.0:1587" takes the port that [smtp] listen_addr "127.0.0.1:1587" listens on',
    );
    const text = `${config("127.0.0.1:9925", "127.0.0.1:1587")}[admin]\n`;
    expect(problems(text)[0]).toStartWith(
      '10:1 admin.listen_addr: "127.0.0.1:9925" (the default) takes the port that [imap] listen_addr ' +
        '"127.0.0.1:9925" listens on',
    );
  });

  test("all three on one port: each later one is refused", () => {
    const found = problems(config("127.0.0.1:1993", "127.0.0.1:1993", "127.0.0.1:1993"));
    expect(found.map((p) => p.split(": ")[0])).toEqual(["5:15 smtp.listen_addr", "8:15 admin.listen_addr"]);
    expect(found[1]).toContain("[imap] listen_addr");
  });

  test("names: the same name, localhost against a loopback literal, a name against a wildcard", () => {
    for (const [a, b] of [
      ["localhost", "LOCALHOST"],
      ["localhost", "127.0.0.1"],
      ["localhost", "::1"],
      ["mail.example.test", "MAIL.example.test"],
      ["mail.example.test", "0.0.0.0"],
      ["::", "mail.example.test"],
    ] as const)
      expect({ a, b, found: problems(config(at(a, 1993), at(b, 1993))).length }).toEqual({ a, b, found: 1 });
  });

  test("different ports, different addresses, and port 0 (a free port each) load", () => {
    expect(problems(config("127.0.0.1:1993", "127.0.0.1:1587", "127.0.0.1:9925"))).toEqual([]);
    expect(problems(config("0.0.0.0:0", "0.0.0.0:0", "0.0.0.0:0"))).toEqual([]);
    for (const [a, b] of APART) expect(problems(config(at(a, 1993), at(b, 1993)))).toEqual([]);
    // A name against an address other than a wildcard cannot be told without resolving it: not refused.
    expect(problems(config("mail.example.test:1993", "127.0.0.1:1993"))).toEqual([]);
  });
});

function listen(host: string, port: number): Promise<Server | Error> {
  const server = createServer();
  return new Promise((resolve) => {
    server.once("error", (e) => resolve(e));
    server.listen(port, host, () => resolve(server));
  });
}

/** A port free on every address, IPv4 and IPv6, at the time of asking. */
async function freePort(): Promise<number> {
  const probe = await listen("::", 0);
  if (probe instanceof Error) throw probe;
  const { port } = probe.address() as { port: number };
  await new Promise((r) => probe.close(r));
  return port;
}

describe("the loader's conflicts are the kernel's", () => {
  for (const [pairs, conflict] of [
    [CONFLICTS, true],
    [APART, false],
  ] as const)
    for (const [a, b] of pairs)
      test(`${a} then ${b}: ${conflict ? "EADDRINUSE" : "both bind"}`, async () => {
        const port = await freePort();
        const first = await listen(a, port);
        if (first instanceof Error) throw first;
        const second = await listen(b, port);
        await new Promise((r) => first.close(r));
        if (!(second instanceof Error)) await new Promise((r) => second.close(r));
        expect(second instanceof Error ? (second as NodeJS.ErrnoException).code : "bound").toBe(
          conflict ? "EADDRINUSE" : "bound",
        );
        expect(problems(config(at(a, port), at(b, port))).length).toBe(conflict ? 1 : 0);
      });
});

test("mailgator check refuses it with exit code 2", () => {
  const file = join(TMP, "m.toml");
  writeFileSync(file, config("127.0.0.1:1993", "0.0.0.0:1993"));
  const main = join(import.meta.dir, "../../src/cli/main.ts");
  const p = Bun.spawnSync([process.execPath, main, "check", "-c", file], { env: { PATH: process.env["PATH"] ?? "" } });
  expect(p.exitCode).toBe(2);
  expect(p.stderr.toString()).toContain(
    `${file}:5:15: smtp.listen_addr: "0.0.0.0:1993" takes the port that [imap] listen_addr "127.0.0.1:1993"`,
  );
});
