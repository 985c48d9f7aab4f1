/**
 * `mailgator_upstream_errors_total` (docs/operations.md "Health and metrics") counts every upstream connection attempt
 * that failed, a certificate that could not be verified among them, whatever the TLS mode: implicit TLS, where the
 * handshake is part of the connection, and STARTTLS, where it follows the greeting. Driven against the test Dovecot
 * and Postfix with the test CA left out of the trusted ones, so that the real certificate fails verification.
 */
import { expect, test } from "bun:test";
import { upstreamErrors } from "../../src/admin/metrics.ts";
import { UpstreamSession as ImapUpstream } from "../../src/imap/upstream.ts";
import type { UpstreamTarget, UpstreamTls } from "../../src/net/upstream.ts";
import { UpstreamSession as SmtpUpstream } from "../../src/smtp/upstream.ts";
import { upstreams } from "../fixtures/index.ts";

const TIMEOUTS = { connectMs: 5000, handshakeMs: 5000, commandMs: 5000 };

/** The test server at `port`, its CA not trusted (`upstream_ca_file` unset). */
function untrusted(port: number, tls: UpstreamTls): UpstreamTarget {
  return { host: upstreams().tlsName, port, tls, skipVerify: false, extraCa: null, connectTimeoutMs: 5000 };
}

async function counted(target: UpstreamTarget, open: () => Promise<unknown>): Promise<number> {
  const labels = { upstream: `${target.host}:${target.port}` };
  const before = upstreamErrors.get(labels);
  const error = await open().then(
    () => null,
    (e: Error) => e,
  );
  expect(String(error)).toMatch(/certificate|self.signed|issuer/i);
  return upstreamErrors.get(labels) - before;
}

test("IMAP: an unverifiable certificate counts one upstream error, with implicit TLS and with STARTTLS", async () => {
  const up = upstreams();
  const tls = untrusted(up.ports.imaps, "tls");
  expect(await counted(tls, () => ImapUpstream.open(tls, TIMEOUTS))).toBe(1);
  const starttls = untrusted(up.ports.imap, "starttls");
  expect(await counted(starttls, () => ImapUpstream.open(starttls, TIMEOUTS))).toBe(1);
});

test("SMTP: an unverifiable certificate counts one upstream error, with implicit TLS and with STARTTLS", async () => {
  const up = upstreams();
  const tls = untrusted(up.ports.smtps, "tls");
  expect(await counted(tls, () => SmtpUpstream.open(tls, null))).toBe(1);
  const starttls = untrusted(up.ports.smtp, "starttls");
  expect(await counted(starttls, () => SmtpUpstream.open(starttls, null))).toBe(1);
});
