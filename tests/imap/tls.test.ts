/**
 * TLS on both legs of the IMAP proxy.
 *
 * Agent side: plain, implicit TLS (`listen_tls = "tls"`) and STARTTLS (`listen_tls = "starttls"`, the node:tls
 * server path), with imapflow, Python's imaplib (IMAP4_SSL, starttls()) and `openssl s_client -starttls imap`.
 * Under STARTTLS nothing authenticates in clear, and bytes pipelined after STARTTLS are dropped.
 * Upstream side: `tls` (Dovecot's imaps port), `starttls` and `none` (its plain port). An upstream certificate
 * that is not trusted, or names another host, is refused before a byte of the login is sent: the agent gets the
 * uniform `NO [UNAVAILABLE]` and an audit row says why.
 */

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createServer as createTlsServer, type Server, type TLSSocket } from "node:tls";
import { createMailbox, type TestMailbox, upstreams } from "../fixtures/index.ts";
import { proxyClient, RawImap, startTestProxy, statusOf, type TestProxy } from "./helpers.ts";

let mailbox: TestMailbox;
/** Agent-facing certificate: the test CA's server certificate (CN localhost, IP 127.0.0.1). */
let certKeys: string;
let tmp: string;

beforeAll(async () => {
  mailbox = await createMailbox({ seed: { folders: { INBOX: 5 }, seed: 3 } });
  const dir = upstreams().dir;
  certKeys = `tls_cert_file = "${join(dir, "tls", "server.pem")}"\ntls_key_file = "${join(dir, "tls", "server.key")}"`;
  tmp = mkdtempSync(join(tmpdir(), "mailgator-tls-"));
});

afterAll(() => {
  rmSync(tmp, { recursive: true, force: true });
});

/** Runs a short Python imaplib session; prints one line per step. */
async function python(port: number, mode: "plain" | "ssl" | "starttls"): Promise<string> {
  const script = `
import imaplib, ssl, sys
port, mode, user, pw, ca = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
ctx = ssl.create_default_context(cafile=ca)
if mode == "ssl":
    c = imaplib.IMAP4_SSL("localhost", port, ssl_context=ctx)
else:
    c = imaplib.IMAP4("localhost", port)
    if mode == "starttls":
        print("before", " ".join(sorted(c.capabilities)))
        c.starttls(ssl_context=ctx)
        print("after", " ".join(sorted(c.capabilities)))
typ, _ = c.login(user, pw)
print("login", typ)
typ, data = c.select("INBOX", readonly=True)
print("select", typ, data[0].decode())
typ, data = c.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
print("fetch", typ, len(data[0][1]) > 0)
c.logout()
print("done")
`;
  const p = Bun.spawn(
    ["/usr/bin/python3", "-c", script, String(port), mode, mailbox.user, mailbox.password, upstreams().caFile],
    { stderr: "pipe" },
  );
  const [out, err] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text()]);
  await p.exited;
  return out + err;
}

describe("agent side", () => {
  test("plain listener: imapflow and imaplib log in and read", async () => {
    const proxy = await startTestProxy();
    try {
      const client = await proxyClient(proxy.port, mailbox.user, mailbox.password, "none");
      const box = await client.mailboxOpen("INBOX");
      expect(box.exists).toBe(5);
      expect(client.secureConnection).toBe(false);
      await client.logout();
      const out = await python(proxy.port, "plain");
      expect(out).toContain("login OK");
      expect(out).toContain("select OK 5");
      expect(out).toContain("done");
    } finally {
      await proxy.close();
    }
  });

  test("implicit TLS listener: imapflow and IMAP4_SSL verify the certificate and work", async () => {
    const proxy = await startTestProxy({ imap: `listen_tls = "tls"\n${certKeys}` });
    try {
      const client = await proxyClient(proxy.port, mailbox.user, mailbox.password, "tls");
      expect(client.secureConnection).toBe(true);
      const box = await client.mailboxOpen("INBOX");
      expect(box.exists).toBe(5);
      const msg = await client.fetchOne("1", { source: true });
      expect(msg && msg.source && msg.source.length).toBeGreaterThan(100);
      await client.logout();
      const out = await python(proxy.port, "ssl");
      expect(out).toContain("login OK");
      expect(out).toContain("fetch OK True");
      // A plain-text client on the TLS port gets nothing IMAP can parse, and the listener survives it.
      const raw = await Promise.race([
        RawImap.open(proxy.port).then(
          () => "greeting",
          () => "refused",
        ),
        Bun.sleep(2000).then(() => "timeout"),
      ]);
      expect(raw).not.toBe("greeting");
      const again = await proxyClient(proxy.port, mailbox.user, mailbox.password, "tls");
      await again.logout();
    } finally {
      await proxy.close();
    }
  });

  describe("STARTTLS listener", () => {
    let proxy: TestProxy;
    beforeAll(async () => {
      proxy = await startTestProxy({ imap: `listen_tls = "starttls"\n${certKeys}` });
    });
    afterAll(async () => {
      await proxy.close();
    });

    test("before STARTTLS: LOGINDISABLED, no AUTH=, and LOGIN is refused without reaching upstream", async () => {
      const raw = await RawImap.open(proxy.port);
      try {
        const caps = await raw.command("a", "CAPABILITY");
        expect(caps).toContain("STARTTLS");
        expect(caps).toContain("LOGINDISABLED");
        expect(caps).not.toContain("AUTH=PLAIN");
        const login = await raw.command("b", `LOGIN "${mailbox.user}" "${mailbox.password}"`);
        expect(statusOf(login, "b")).toStartWith("b NO [PRIVACYREQUIRED]");
        const auth = await raw.command("c", "AUTHENTICATE PLAIN AGFAYg==");
        expect(statusOf(auth, "c")).toMatch(/^c (NO|BAD)/);
        const plain = Buffer.from(`\0${mailbox.user}\0${mailbox.password}`).toString("base64");
        const wellFormed = await raw.command("d", `AUTHENTICATE PLAIN ${plain}`);
        expect(statusOf(wellFormed, "d")).toStartWith("d NO [PRIVACYREQUIRED]");
        // Without an initial response the credential has not crossed yet: refused before any `+` asks for it.
        raw.write("e AUTHENTICATE PLAIN\r\n");
        const asked = await raw.readUntil((b) => /^(\+|e )/m.test(b));
        expect(asked).toStartWith("e NO [PRIVACYREQUIRED]");
      } finally {
        raw.close();
      }
      const rows = await proxy.rows();
      expect(rows.some((r) => r.decision === "allow" && r.command === "LOGIN")).toBe(false);
      // Each refusal has its row, saying whether a credential crossed in clear, and never the credential.
      const refused = rows.filter((r) => r.decision === "deny" && /before STARTTLS/.test(r.reason ?? ""));
      expect(refused.map((r) => r.command)).toEqual(["LOGIN", "AUTHENTICATE", "AUTHENTICATE"]);
      expect(refused[0]!.reason).toContain("carried a credential in clear");
      expect(refused[2]!.reason).toContain("refused before the credential was sent");
      expect(JSON.stringify(refused)).not.toContain(mailbox.password);
    });

    test("imapflow upgrades with STARTTLS and works", async () => {
      const client = await proxyClient(proxy.port, mailbox.user, mailbox.password, "starttls");
      // imapflow counts the upgraded connection as secure.
      expect(client.secureConnection).toBe(true);
      const box = await client.mailboxOpen("INBOX");
      expect(box.exists).toBe(5);
      // The capability list after TLS no longer carries LOGINDISABLED.
      expect(client.capabilities.has("LOGINDISABLED")).toBe(false);
      await client.logout();
    });

    test("Python imaplib starttls(): capabilities before and after, login, select, fetch", async () => {
      const out = await python(proxy.port, "starttls");
      const before = /before (.*)/.exec(out)?.[1] ?? "";
      const after = /after (.*)/.exec(out)?.[1] ?? "";
      expect(before.split(" ")).toContain("LOGINDISABLED");
      expect(after.split(" ")).toContain("AUTH=PLAIN");
      expect(after.split(" ")).not.toContain("STARTTLS");
      expect(out).toContain("login OK");
      expect(out).toContain("select OK 5");
      expect(out).toContain("done");
    });

    test("openssl s_client -starttls imap completes the handshake and verifies the certificate", async () => {
      const p = Bun.spawn(
        [
          "openssl",
          "s_client",
          "-starttls",
          "imap",
          "-connect",
          `127.0.0.1:${proxy.port}`,
          "-CAfile",
          upstreams().caFile,
          "-verify_hostname",
          "localhost",
          "-verify_return_error",
          "-quiet",
        ],
        { stdin: "pipe", stdout: "pipe", stderr: "pipe" },
      );
      p.stdin.write(`a CAPABILITY\r\nb LOGIN "${mailbox.user}" "${mailbox.password}"\r\nc LOGOUT\r\n`);
      p.stdin.flush();
      const timer = setTimeout(() => p.kill(), 10_000);
      const out = await new Response(p.stdout).text();
      clearTimeout(timer);
      const err = await new Response(p.stderr).text();
      expect(err).toContain("verify return:1");
      expect(out).toContain("a OK");
      expect(out).toMatch(/\* CAPABILITY [^\r\n]*AUTH=PLAIN/);
      expect(out).toContain("b OK");
      expect(out).toContain("c OK");
    });

    test("commands pipelined in clear after STARTTLS are discarded (RFC 9051 §6.2.1)", async () => {
      const logins = async () => (await proxy.rows()).filter((r) => r.command === "LOGIN").length;
      const before = await logins();
      const raw = await RawImap.open(proxy.port);
      try {
        // The injected LOGIN rides in the same packet as STARTTLS; it must never be executed.
        raw.write(`s STARTTLS\r\nx LOGIN "${mailbox.user}" "${mailbox.password}"\r\n`);
        await raw.readUntil((b) => b.includes("s OK"));
        await Bun.sleep(500);
        expect(raw.take()).not.toContain("\r\nx ");
      } finally {
        raw.close();
      }
      expect(await logins()).toBe(before);
    });
  });
});

describe("upstream side", () => {
  for (const mode of ["tls", "starttls", "none"] as const) {
    test(`upstream_tls = "${mode}" with the test CA: login and fetch work`, async () => {
      const proxy = await startTestProxy({ upstreamTls: mode });
      try {
        const client = await proxyClient(proxy.port, mailbox.user, mailbox.password);
        const box = await client.mailboxOpen("INBOX");
        expect(box.exists).toBe(5);
        const msg = await client.fetchOne("5", { envelope: true, uid: true });
        expect(msg && msg.uid).toBe(5);
        await client.logout();
      } finally {
        await proxy.close();
      }
    });
  }

  for (const mode of ["tls", "starttls"] as const) {
    test(`upstream_tls = "${mode}" without upstream_ca_file: untrusted certificate refused, audited`, async () => {
      const proxy = await startTestProxy({ upstreamTls: mode, caFile: null });
      try {
        const raw = await RawImap.open(proxy.port);
        const reply = await raw.command("a", `LOGIN "${mailbox.user}" "${mailbox.password}"`);
        expect(statusOf(reply, "a")).toBe("a NO [UNAVAILABLE] Upstream server unavailable");
        expect(reply).not.toContain(mailbox.password);
        raw.close();
        const rows = await proxy.rows();
        const row = rows.find((r) => r.command === "LOGIN");
        expect(row?.decision).toBe("error");
        expect(row?.reason ?? "").toMatch(/certificate/i);
        expect(row?.reason ?? "").not.toContain(mailbox.password);
      } finally {
        await proxy.close();
      }
    });
  }
});

/** Makes a private CA and a server certificate it signs for `name` only (not localhost, not 127.0.0.1). */
async function certificateFor(name: string): Promise<{ ca: string; cert: string; key: string }> {
  const dir = mkdtempSync(join(tmp, "ca-"));
  const run = async (args: string[]): Promise<void> => {
    const p = Bun.spawn(["openssl", ...args], { cwd: dir, stdout: "ignore", stderr: "pipe" });
    const code = await p.exited;
    if (code !== 0) throw new Error(`openssl ${args[0]} failed: ${await new Response(p.stderr).text()}`);
  };
  await run([
    "req",
    "-x509",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-days",
    "2",
    "-subj",
    "/CN=Other Test CA",
    "-keyout",
    "ca.key",
    "-out",
    "ca.pem",
  ]);
  await run([
    "req",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-subj",
    `/CN=${name}`,
    "-keyout",
    "server.key",
    "-out",
    "server.csr",
  ]);
  writeFileSync(join(dir, "ext"), `subjectAltName=DNS:${name}\n`);
  await run([
    "x509",
    "-req",
    "-in",
    "server.csr",
    "-CA",
    "ca.pem",
    "-CAkey",
    "ca.key",
    "-CAcreateserial",
    "-days",
    "2",
    "-extfile",
    "ext",
    "-out",
    "server.pem",
  ]);
  return { ca: join(dir, "ca.pem"), cert: join(dir, "server.pem"), key: join(dir, "server.key") };
}

test("an upstream whose certificate names another host is refused before anything is sent", async () => {
  const files = await certificateFor("imap.other.test");
  const received: Buffer[] = [];
  let handshakes = 0;
  const server: Server = createTlsServer(
    {
      cert: await Bun.file(files.cert).bytes().then(Buffer.from),
      key: await Bun.file(files.key).bytes().then(Buffer.from),
    },
    (socket: TLSSocket) => {
      handshakes++;
      socket.on("data", (d: Buffer) => received.push(d));
      socket.on("error", () => {});
      socket.write("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR UIDPLUS UNSELECT] fake upstream\r\n");
    },
  );
  server.on("tlsClientError", () => {});
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as { port: number }).port;
  // The CA is trusted, so the only thing wrong is the name: 127.0.0.1 is not imap.other.test.
  const proxy = await startTestProxy({ upstreamTls: "tls", upstreamAddr: `127.0.0.1:${port}`, caFile: files.ca });
  try {
    const raw = await RawImap.open(proxy.port);
    const reply = await raw.command("a", `LOGIN "${mailbox.user}" "${mailbox.password}"`);
    expect(statusOf(reply, "a")).toBe("a NO [UNAVAILABLE] Upstream server unavailable");
    raw.close();
    await Bun.sleep(200);
    expect(handshakes).toBe(0);
    expect(Buffer.concat(received).length).toBe(0);
    const row = (await proxy.rows()).find((r) => r.command === "LOGIN");
    expect(row?.decision).toBe("error");
    expect(row?.reason ?? "").toMatch(/altnames|host ?name|does not match/i);
  } finally {
    await proxy.close();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
});
