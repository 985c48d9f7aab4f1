/**
 * A reload that changes how the upstream is reached, not where (docs/operations.md "Reload", `sameUpstream` in
 * src/net/upstream.ts): certificate checking turned off or on, or other extra CAs, ends the IMAP and SMTP sessions
 * connected under the old settings, against the real Dovecot and Postfix; the same config again ends nothing. A
 * reload during a login is judged against the config that login was checked with.
 */

import { afterAll, expect, test } from "bun:test";
import { generateToken, hashToken } from "../../src/vault/token.ts";
import { createMailbox, upstreams } from "../fixtures/index.ts";
import { TcpRelay } from "../fixtures/tcp-relay.ts";
import { RawImap, startTestProxy as startImapProxy, statusOf } from "../imap/helpers.ts";
import { loggedIn, RawClient, startTestProxy as startSmtpProxy } from "../smtp/helpers.ts";

const closing: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const close of closing) await close();
});

/**
 * A relay to the test server's `port` that holds each connection until `release()`: a login through it waits there.
 * `connected` resolves when the first connection arrives.
 */
async function holdingRelay(port: number): Promise<{ port: number; connected: Promise<void>; release: () => void }> {
  const up = upstreams();
  let arrived!: () => void;
  const connected = new Promise<void>((resolve) => {
    arrived = resolve;
  });
  let release!: () => void;
  const released = new Promise<void>((resolve) => {
    release = resolve;
  });
  const relay = await TcpRelay.start({ host: up.host, port }, async () => {
    arrived();
    await released;
    return undefined;
  });
  closing.push(() => relay.close());
  return { port: relay.port, connected, release };
}

test("IMAP: upstream_tls_skip_verify or upstream_ca_file changed: the session ends; the same config not", async () => {
  const proxy = await startImapProxy();
  closing.push(() => proxy.close());
  const mailbox = await createMailbox({ name: "reload-upstream" });
  const raw = await RawImap.login(proxy.port, mailbox);
  expect(proxy.reload({})).toBe(0);
  expect(await raw.command("a1", "NOOP")).toContain("a1 OK");
  expect(proxy.reload({ imap: "upstream_tls_skip_verify = true" })).toBe(1);
  const ended = await raw.readUntil(() => false, 10_000, "the proxy did not close the session");
  expect(ended).toContain("* BYE Configuration changed; this session ends, log in again");
  // Logged in under skip_verify: a CA file given again (the same address and TLS mode) ends it too.
  const again = await RawImap.login(proxy.port, mailbox);
  expect(proxy.reload({ imap: "upstream_tls_skip_verify = true" })).toBe(0);
  expect(proxy.reload({ caFile: null, imap: "upstream_tls_skip_verify = true" })).toBe(1);
  expect(await again.readUntil(() => false, 10_000, "not closed")).toContain("* BYE Configuration changed");
});

test("SMTP: upstream_tls_skip_verify changed: a pass-through session ends with 421; the same config not", async () => {
  const proxy = await startSmtpProxy({ rules: '[[rules]]\nname = "all"\naction = "allow"\n' });
  closing.push(() => proxy.close());
  const c = await loggedIn(proxy.port, upstreams().users[0]!);
  expect(proxy.proxy.prepareReload(proxy.config).commit()).toBe(0);
  expect((await c.command("NOOP")).code).toBe(250);
  const smtp = proxy.config.smtp!;
  const next = { ...proxy.config, smtp: { ...smtp, upstreamTlsSkipVerify: true } };
  expect(proxy.proxy.prepareReload(next).commit()).toBe(1);
  const ended = await c.reply();
  expect([ended.code, ended.lines.join(" ")]).toEqual([
    421,
    "4.3.2 Configuration changed; this session ends, log in again",
  ]);
});

test("SMTP: a reload while a pass-through AUTH waits for the upstream is judged before the 235: 421", async () => {
  // The proxy's AUTH waits at the relay.
  const up = upstreams();
  const { port: relayPort, connected, release } = await holdingRelay(up.ports.smtp);
  const proxy = await startSmtpProxy({
    rules: '[[rules]]\nname = "all"\naction = "allow"\n',
    upstreamAddr: `127.0.0.1:${relayPort}`,
  });
  closing.push(() => proxy.close());
  const user = up.users[0]!;
  const c = await RawClient.connect(proxy.port);
  await c.reply();
  await c.command("EHLO client.test");
  const auth = c.command(`AUTH PLAIN ${Buffer.from(`\0${user.user}\0${user.password}`).toString("base64")}`);
  await connected;
  // Not logged in yet: the reload itself ends nothing.
  const smtp = proxy.config.smtp!;
  const next = { ...proxy.config, smtp: { ...smtp, upstreamTlsSkipVerify: true } };
  expect(proxy.proxy.prepareReload(next).commit()).toBe(0);
  release();
  const reply = await auth;
  expect([reply.code, reply.lines.join(" ")]).toEqual([
    421,
    "4.3.2 Configuration changed; this session ends, log in again",
  ]);
  await c.waitClosed();
});

test("IMAP: a token revoked by a reload while the LOGIN waits for the upstream: BYE, not a session", async () => {
  // The proxy's login waits at the relay.
  const { port: relayPort, connected, release } = await holdingRelay(upstreams().ports.imap);
  const mailbox = await createMailbox({ name: "reload-token" });
  const [oldToken, newToken] = [generateToken(), generateToken()];
  const vault = (token: string) =>
    `[[agents]]\nname = "bot"\ntoken_hash = "${hashToken(token)}"\naccount = "main"\n\n` +
    `[accounts.main]\nusername = "${mailbox.user}"\npassword = "${mailbox.password}"\n`;
  const options = {
    upstreamTls: "none" as const,
    upstreamAddr: `127.0.0.1:${relayPort}`,
  };
  const proxy = await startImapProxy({ ...options, extra: vault(oldToken) });
  closing.push(() => proxy.close());
  const raw = await RawImap.open(proxy.port);
  raw.write(`a LOGIN bot ${oldToken}\r\n`);
  await connected;
  // Not logged in yet: the reload that revokes the token ends nothing by itself.
  expect(proxy.reload({ ...options, extra: vault(newToken) })).toBe(0);
  release();
  const reply = await raw.readUntil(() => false, 10_000, "the proxy did not close the session");
  expect(reply).toContain("* BYE Configuration changed; this session ends, log in again");
  expect(reply).not.toMatch(/^a OK/m);
  // The old token is refused from now on; the new one logs in.
  const again = await RawImap.open(proxy.port);
  expect(statusOf(await again.command("b", `LOGIN bot ${oldToken}`), "b")).toStartWith("b NO");
  expect(statusOf(await again.command("c", `LOGIN bot ${newToken}`), "c")).toStartWith("c OK");
  again.close();
});
