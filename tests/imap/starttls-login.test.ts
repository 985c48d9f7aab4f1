/**
 * STARTTLS on the IMAP listener (RFC 9051 §6.2.1, docs/imap.md "Capabilities advertised") against the real Dovecot:
 * before the upgrade no `+` asks for a LOGIN's user name or password in clear (its synchronizing literals are refused,
 * as AUTHENTICATE is before its `+`), and commands pipelined in clear behind STARTTLS are not run inside the TLS
 * session the client then negotiates (the CVE-2011-0411 class).
 */

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { connect as tlsConnect } from "node:tls";
import { createMailbox, type TestMailbox, upstreams } from "../fixtures/index.ts";
import { RawImap, startTestProxy, statusOf, type TestProxy } from "./helpers.ts";

let mailbox: TestMailbox;
let proxy: TestProxy;

beforeAll(async () => {
  mailbox = await createMailbox({ seed: { folders: { INBOX: 2 }, seed: 5 } });
  const tls = join(upstreams().dir, "tls");
  const keys = `tls_cert_file = "${join(tls, "server.pem")}"\ntls_key_file = "${join(tls, "server.key")}"`;
  proxy = await startTestProxy({ imap: `listen_tls = "starttls"\n${keys}` });
});

afterAll(async () => {
  await proxy?.close();
});

/** Upgrades a raw client whose STARTTLS was answered OK; returns a raw client on the TLS socket. */
async function upgrade(raw: RawImap): Promise<RawImap> {
  raw.socket.removeAllListeners("data");
  const secure = tlsConnect({ socket: raw.socket, ca: readFileSync(upstreams().caFile), servername: "localhost" });
  await new Promise<void>((resolve, reject) => {
    secure.once("secureConnect", () => resolve());
    secure.once("error", reject);
  });
  return RawImap.fromSocket(secure);
}

describe("IMAP STARTTLS listener", () => {
  test("a LOGIN's synchronizing literal before STARTTLS gets NO [PRIVACYREQUIRED], never a `+`", async () => {
    const before = (await proxy.rows()).length;
    const raw = await RawImap.open(proxy.port);
    try {
      // The password as a synchronizing literal: answering `+` would ask for it in clear.
      raw.write(`a LOGIN "${mailbox.user}" {${mailbox.password.length}}\r\n`);
      const first = await raw.readUntil((b) => /^(\+|a )/m.test(b));
      expect(first).toStartWith("a NO [PRIVACYREQUIRED]");
      raw.take();
      // The user name as one: refused before it is sent too.
      raw.write(`b LOGIN {${mailbox.user.length}}\r\n`);
      const second = await raw.readUntil((b) => /^(\+|b )/m.test(b));
      expect(second).toStartWith("b NO [PRIVACYREQUIRED]");
      raw.take();
      // The session goes on: the client may still upgrade.
      expect(statusOf(await raw.command("n", "NOOP"), "n")).toStartWith("n OK");
    } finally {
      raw.close();
    }
    const rows = (await proxy.rows()).slice(before);
    expect(rows.map((r) => [r.command, r.decision, r.reason])).toEqual([
      ["LOGIN", "deny", "LOGIN before STARTTLS, which this listener requires; refused before the credential was sent"],
      ["LOGIN", "deny", "LOGIN before STARTTLS, which this listener requires; refused before the credential was sent"],
    ]);
  });

  test("a LOGIN's non-synchronizing literal before STARTTLS: read, refused as a credential sent in clear", async () => {
    const before = (await proxy.rows()).length;
    const raw = await RawImap.open(proxy.port);
    try {
      const reply = await raw.command(
        "a",
        `LOGIN "${mailbox.user}" {${mailbox.password.length}+}\r\n${mailbox.password}`,
      );
      expect(reply).not.toContain("+ ");
      expect(statusOf(reply, "a")).toStartWith("a NO [PRIVACYREQUIRED]");
    } finally {
      raw.close();
    }
    const rows = (await proxy.rows()).slice(before);
    expect(rows.map((r) => [r.command, r.decision, r.reason])).toEqual([
      ["LOGIN", "deny", "LOGIN before STARTTLS, which this listener requires; it carried a credential in clear"],
    ]);
    expect(JSON.stringify(rows)).not.toContain(mailbox.password);
  });

  test("after STARTTLS a LOGIN with synchronizing literals gets its `+` and logs in", async () => {
    const raw = await RawImap.open(proxy.port);
    expect(statusOf(await raw.command("s", "STARTTLS"), "s")).toStartWith("s OK");
    const secure = await upgrade(raw);
    try {
      secure.write(`a LOGIN {${mailbox.user.length}}\r\n`);
      expect(await secure.readUntil((b) => /^(\+|a )/m.test(b))).toStartWith("+ ");
      secure.take();
      secure.write(`${mailbox.user} {${mailbox.password.length}}\r\n`);
      expect(await secure.readUntil((b) => /^(\+|a )/m.test(b))).toStartWith("+ ");
      secure.take();
      secure.write(`${mailbox.password}\r\n`);
      expect(statusOf(await secure.waitTagged("a"), "a")).toStartWith("a OK");
    } finally {
      secure.close();
    }
  });

  test("attack: commands pipelined in clear with STARTTLS are not run in the TLS session that follows", async () => {
    const logins = async () => (await proxy.rows()).filter((r) => r.command === "LOGIN").length;
    const before = await logins();
    const raw = await RawImap.open(proxy.port);
    // Injected behind STARTTLS in the same packet: a CAPABILITY and a LOGIN the client never sent over TLS.
    raw.write(`s STARTTLS\r\nx CAPABILITY\r\ny LOGIN "${mailbox.user}" "${mailbox.password}"\r\n`);
    expect(statusOf(await raw.waitTagged("s"), "s")).toStartWith("s OK");
    const secure = await upgrade(raw);
    try {
      const reply = await secure.command("n", "NOOP");
      expect(reply).toBe("n OK NOOP completed\r\n");
      // Still logged out: the injected LOGIN did not run.
      expect(statusOf(await secure.command("l", 'LIST "" "*"'), "l")).toStartWith("l BAD");
    } finally {
      secure.close();
    }
    expect(await logins()).toBe(before);
  });
});
