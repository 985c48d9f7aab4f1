/**
 * Shared by the tests that read the To header against a rule refusing blind copies (address-forms, group-end,
 * header-whitespace, address-specials; docs/smtp.md "What the message says"): a proxy in front of the real Postfix
 * whose first rule denies a send with any bcc recipient, then allows *@corp.test, then denies; one logged-in session
 * for the file's tests. A message whose envelope recipient the To header names in a form readers cannot read must
 * leave that recipient undecided (a blind copy, so denied), never classed as a To recipient.
 */
import { afterAll, beforeAll, expect } from "bun:test";
import { parseAddressList } from "../../src/mail/index.ts";
import {
  dataPayload,
  loggedIn,
  type RawClient,
  sinkCopies,
  type TestProxy,
  upstreams,
  useTestProxy,
} from "./helpers.ts";

export const BLIND_COPY_RULES = `
[[rules]]
name = "no blind copies"
action = "deny"
operations = ["send"]
bcc = "*"

[[rules]]
name = "corp"
action = "allow"
operations = ["send"]
to = "*@corp.test"

[[rules]]
name = "nothing else"
action = "deny"
`;

export interface BlindCopySession {
  /** One transaction to `rcpt` with `to` as the To field and `from` as From (else the login's address); the reply. */
  send(id: string, rcpt: string, to: string, from?: string): Promise<string>;
  /**
   * Sends `id` to `rcpt` with `to` as the To field and checks it was refused as a blind copy no rule decided: `554
   * 5.7.1`, the RCPT TO row's deny by no rule ("undecided without bcc"), and no copy delivered.
   */
  expectBlindCopyRefused(id: string, rcpt: string, to: string): Promise<void>;
  /**
   * Sends `id` to `rcpt` with `to` as the To field, which holds a control character, and checks it was refused for
   * that at the end of DATA (`554 5.6.0`, docs/smtp.md "What the message says") before any rule was asked, and that
   * the header reader still reads no address in `to` (as the IMAP filter reads a fetched header).
   */
  expectControlRefused(id: string, rcpt: string, to: string): Promise<void>;
}

/** Registers the proxy and the session for the calling test file (call at its top level). */
export function useBlindCopyProxy(): BlindCopySession {
  let proxy: TestProxy;
  useTestProxy({ rules: BLIND_COPY_RULES }, (p) => (proxy = p));
  let client: RawClient;
  beforeAll(async () => {
    client = await loggedIn(proxy.port);
  });
  afterAll(() => {
    client?.close();
  });
  const send = async (id: string, rcpt: string, to: string, from?: string): Promise<string> => {
    const sender = upstreams().users[0]!.address;
    expect((await client.command(`MAIL FROM:<${sender}>`)).code).toBe(250);
    expect((await client.command(`RCPT TO:<${rcpt}>`)).code).toBe(250);
    expect((await client.command("DATA")).code).toBe(354);
    const head = `From: ${from ?? `<${sender}>`}\r\nTo: ${to}\r\nSubject: ${id}\r\n`;
    client.write(dataPayload(`${head}Message-ID: <${id}@blind-copy.test>\r\n\r\nbody\r\n`));
    return (await client.reply()).raw;
  };
  const expectBlindCopyRefused = async (id: string, rcpt: string, to: string): Promise<void> => {
    expect(await send(id, rcpt, to)).toStartWith("554 5.7.1");
    const row = (await proxy.rows()).findLast((r) => r.command === "RCPT TO" && r.target === rcpt);
    expect(row).toMatchObject({ decision: "deny", rule: null });
    expect(row!.reason).toContain("undecided without bcc");
    expect(sinkCopies(id)).toEqual([]);
  };
  const expectControlRefused = async (id: string, rcpt: string, to: string): Promise<void> => {
    const control = /[\x00-\x08\x0a-\x1f\x7f]/.exec(to)![0].charCodeAt(0);
    const hex = `0x${control.toString(16).toUpperCase().padStart(2, "0")}`;
    expect(await send(id, rcpt, to)).toBe(
      `554 5.6.0 Control character ${hex} in the header field to; nothing was sent\r\n`,
    );
    const row = (await proxy.rows()).findLast((r) => r.command === "DATA" && r.target === `<${id}@blind-copy.test>`);
    expect(row).toMatchObject({ decision: "deny", reason: `control character ${hex} in the header field to` });
    expect(parseAddressList(to)).toEqual({ addresses: [], ok: false });
    expect(sinkCopies(id)).toEqual([]);
  };
  return { send, expectBlindCopyRefused, expectControlRefused };
}
