/**
 * An `upstream_addr` that is one of Mailgator's own listeners (docs/config.md "One port per listener"): the proxy
 * would connect to itself, each connection opening another until the connection limits stop it, and no mail server
 * would ever be reached. The config is refused when it loads, naming both settings. What counts as its own listener
 * is held to the kernel's answer: each loopback pair the loader refuses connects to a socket listening as the
 * listener would, and each pair it accepts does not.
 */

import { describe, expect, test } from "bun:test";
import { connect, createServer, type Server } from "node:net";
import { ConfigError, parseConfig } from "../../src/config/index.ts";

const at = (host: string, port: number): string => (host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`);

function config(imapListen: string, imapUpstream: string, smtpUpstream = "127.0.0.1:2587"): string {
  return (
    `[imap]\nlisten_addr = "${imapListen}"\nupstream_addr = "${imapUpstream}"\nupstream_tls = "none"\n` +
    `[smtp]\nlisten_addr = "127.0.0.1:1587"\nupstream_addr = "${smtpUpstream}"\nupstream_tls = "none"\n` +
    `[admin]\nlisten_addr = "127.0.0.1:9925"\n` +
    `[[rules]]\nname = "r"\naction = "allow"\n`
  );
}

function problems(text: string): string[] {
  try {
    parseConfig(text, "/etc/mailgator.toml", { env: {} });
  } catch (e) {
    if (e instanceof ConfigError) return e.problems.map((p) => `${p.path}: ${p.message}`);
    throw e;
  }
  return [];
}

/** (listener, upstream) host pairs on one port where the upstream is the listener. */
const LOOPS: [string, string][] = [
  ["127.0.0.1", "127.0.0.1"],
  ["0.0.0.0", "127.0.0.1"],
  ["0.0.0.0", "127.0.0.5"],
  ["0.0.0.0", "::ffff:127.0.0.1"],
  ["::", "::1"],
  ["::", "127.0.0.1"],
  ["::1", "0:0:0:0:0:0:0:1"],
];
/** Pairs where it is not. */
const APART: [string, string][] = [
  ["0.0.0.0", "::1"],
  ["127.0.0.1", "127.0.0.2"],
  ["::1", "127.0.0.1"],
];

describe("an upstream_addr that is Mailgator's own listener is a config error", () => {
  for (const [l, u] of LOOPS)
    test(`listening on ${l}, upstream ${u}`, () => {
      expect(problems(config(at(l, 1993), at(u, 1993)))).toEqual([
        `imap.upstream_addr: "${at(u, 1993)}" is Mailgator's own [imap] listen_addr "${at(l, 1993)}": the proxy ` +
          "would connect to itself, each connection opening another. Name the mail server's address",
      ]);
    });

  test("localhost, a name against the same name, and the other proxy's or the admin listener", () => {
    expect(problems(config("127.0.0.1:1993", "localhost:1993"))).toHaveLength(1);
    expect(problems(config("localhost:1993", "127.0.0.1:1993"))).toHaveLength(1);
    expect(problems(config("mail.example.test:1993", "MAIL.example.test:1993"))).toHaveLength(1);
    expect(problems(config("127.0.0.1:1993", "127.0.0.1:2993", "127.0.0.1:1993"))).toEqual([
      'smtp.upstream_addr: "127.0.0.1:1993" is Mailgator\'s own [imap] listen_addr "127.0.0.1:1993": the proxy ' +
        "would connect to itself, each connection opening another. Name the mail server's address",
    ]);
    expect(problems(config("127.0.0.1:1993", "127.0.0.1:9925"))[0]).toStartWith(
      'imap.upstream_addr: "127.0.0.1:9925" is Mailgator\'s own [admin] listen_addr "127.0.0.1:9925"',
    );
  });

  test("a mail server on the same port elsewhere loads: another name or address, or a listener on port 0", () => {
    // The usual VPS: listening on every address at 993 for agents, the provider's server at 993.
    expect(problems(config("0.0.0.0:993", "imap.example.test:993"))).toEqual([]);
    expect(problems(config("[::]:993", "203.0.113.5:993"))).toEqual([]);
    expect(problems(config("0.0.0.0:0", "127.0.0.1:993"))).toEqual([]);
    for (const [l, u] of APART) expect(problems(config(at(l, 1993), at(u, 1993)))).toEqual([]);
  });
});

function listen(host: string, port: number): Promise<Server> {
  const server = createServer((s) => s.destroy());
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => resolve(server));
  });
}

function reaches(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host, port });
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
}

describe("the loader's loops are the kernel's", () => {
  for (const [pairs, loop] of [
    [LOOPS, true],
    [APART, false],
  ] as const)
    for (const [l, u] of pairs)
      test(`listening on ${l}, connecting to ${u}: ${loop ? "reaches it" : "does not"}`, async () => {
        const server = await listen(l, 0);
        const { port } = server.address() as { port: number };
        try {
          expect(await reaches(u, port)).toBe(loop);
        } finally {
          await new Promise((r) => server.close(r));
        }
        expect(problems(config(at(l, port), at(u, port))).length).toBe(loop ? 1 : 0);
      });
});
