/**
 * A reload that changes how the upstream is reached, not where (docs/operations.md "Reload", `sameUpstream` in
 * src/net/upstream.ts): certificate checking turned off or on, or other extra CAs, ends the IMAP and SMTP sessions
 * connected under the old settings, against the real Dovecot and Postfix; the same config again ends nothing.
 */

import { afterAll, expect, test } from "bun:test";
import { createMailbox, upstreams } from "../fixtures/index.ts";
import { RawImap, startTestProxy as startImapProxy } from "../imap/helpers.ts";
import { loggedIn, startTestProxy as startSmtpProxy } from "../smtp/helpers.ts";

const closing: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const close of closing) await close();
});

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
