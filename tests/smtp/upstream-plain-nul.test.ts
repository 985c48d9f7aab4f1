/**
 * The SMTP upstream client sends a password login as PLAIN (`NUL name NUL password`, RFC 4616 §2) or LOGIN. A NUL
 * inside the name or the password would move the line between them: the upstream would be sent a login nobody gave.
 * The agent-facing decoders refuse such a name or password (tests/smtp/auth.test.ts); the client refuses it too,
 * before any AUTH goes out, whatever gives it one. Against the in-process fake upstream (it records every line).
 */

import { afterAll, beforeAll, expect, test } from "bun:test";
import { UpstreamError, UpstreamSession } from "../../src/smtp/upstream.ts";
import { type FakeUpstream, startFakeUpstream } from "./fake-upstream.ts";

let fake: FakeUpstream;

beforeAll(async () => {
  fake = await startFakeUpstream({});
});

afterAll(async () => {
  await fake?.close();
});

const target = () => ({
  host: "127.0.0.1",
  port: fake.port,
  tls: "none" as const,
  skipVerify: false,
  extraCa: null,
  connectTimeoutMs: 5000,
});

test("a name or password holding NUL is refused before AUTH; without it the same login goes", async () => {
  for (const credentials of [
    { username: "alice\0pw", password: "x" },
    { username: "alice", password: "p\0w" },
    { username: "\0alice", password: "pw" },
  ]) {
    const before = fake.lines.length;
    const opened = UpstreamSession.open(target(), credentials);
    await expect(opened).rejects.toBeInstanceOf(UpstreamError);
    await expect(opened).rejects.toThrow("holding NUL");
    expect(fake.lines.slice(before).filter((l) => l.startsWith("AUTH"))).toEqual([]);
  }
  const session = await UpstreamSession.open(target(), { username: "alice", password: "pw" });
  await session.quit();
  expect(fake.lines.filter((l) => l.startsWith("AUTH PLAIN"))).toHaveLength(1);
});
