/**
 * A multipart whose `boundary` parameter is also given in an RFC 2231 form (`boundary*`, `boundary*0`): readers
 * split it on different boundaries (docs/smtp.md "What the message says"). Dovecot, whose BODYSTRUCTURE the IMAP
 * filter reads, splits on the plain `boundary` when there is one and ignores `boundary*`; a reader that prefers the
 * RFC 2231 value, as Mozilla's parameter parser does, splits on `y`. The messages below hold a text part between
 * `--x` delimiters and a PDF between `--y` ones: no attachment to one reader, a PDF to the other. So has_attachment
 * is unknown on both sides: the SMTP proxy refuses such a message under a rule that tests it, and the IMAP filter
 * does not call Dovecot's structure of it attachment-free. A plain boundary alone is read as before.
 */

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { hasAttachment } from "../../src/imap/classify.ts";
import type { Value } from "../../src/imap/wire/index.ts";
import { dovecotStructures } from "../imap/helpers.ts";
import {
  dataPayload,
  loggedIn,
  marker,
  type RawClient,
  sinkCopies,
  type TestProxy,
  upstreams,
  useTestProxy,
  waitForSink,
} from "./helpers.ts";

const RULES = `
[[rules]]
name = "text only"
action = "allow"
operations = ["send"]
to = "*@corp.test"
has_attachment = false

[[rules]]
name = "nothing else"
action = "deny"
`;

const run = marker();
const sender = () => upstreams().users[0]!.address;
const id = (n: string) => `${run}-${n}`;

const PDF_PART =
  'Content-Type: application/pdf; name="secret.pdf"\nContent-Disposition: attachment; filename="secret.pdf"\n' +
  "Content-Transfer-Encoding: base64\n\nJVBERi0xLjQK\n";
/** Text between `--x` delimiters, then a PDF between `--y` ones (the epilogue of `x`). */
const TWO_READINGS = `--x\nContent-Type: text/plain\n\nhello\n--x--\n--y\n${PDF_PART}--y--\n`;

function message(caseId: string, parameters: string, body: string): string {
  return (
    `From: <${sender()}>\nTo: <rcpt-${caseId}@corp.test>\nSubject: ${caseId}\nMessage-ID: <${caseId}@rfc2231.test>\n` +
    `MIME-Version: 1.0\nContent-Type: multipart/mixed; ${parameters}\n\n${body}`
  ).replace(/\r?\n/g, "\r\n");
}

const REFUSED = [
  ["a plain boundary and an extended one", `boundary="x"; boundary*="''y"`],
  ["a plain boundary and a continued one", `boundary="x"; boundary*0="y"`],
  ["a continued boundary before a plain one", `boundary*0="y"; boundary="x"`],
  ["an extended boundary alone", `boundary*="''y"`],
].map(([name, parameters], n) => ({
  name: name!,
  id: id(`r${n}`),
  text: message(id(`r${n}`), parameters!, TWO_READINGS),
}));

const CONTROL = {
  id: id("plain"),
  text: message(id("plain"), `boundary="x"`, "--x\nContent-Type: text/plain\n\nhello\n--x--\n"),
};

let proxy: TestProxy;
useTestProxy({ rules: RULES }, (p) => (proxy = p));

let client: RawClient;
/** Dovecot's BODYSTRUCTURE of each case, by id (the same bytes, appended to a fresh mailbox). */
let structures: Map<string, Value>;

beforeAll(async () => {
  client = await loggedIn(proxy.port);
  structures = await dovecotStructures([...REFUSED, CONTROL]);
});

afterAll(() => {
  client?.close();
});

async function send(c: { id: string; text: string }): Promise<string> {
  expect((await client.command(`MAIL FROM:<${sender()}>`)).code).toBe(250);
  expect((await client.command(`RCPT TO:<rcpt-${c.id}@corp.test>`)).code).toBe(250);
  expect((await client.command("DATA")).code).toBe(354);
  client.write(dataPayload(c.text));
  return (await client.reply()).raw;
}

describe("a boundary given in an RFC 2231 form", () => {
  for (const c of REFUSED) {
    test(`${c.name}: has_attachment unknown to the IMAP filter in Dovecot's structure`, () => {
      expect(structures.has(c.id)).toBe(true);
      expect(hasAttachment(structures.get(c.id)!)).toBeUndefined();
    });

    test(`${c.name}: has_attachment unknown to the SMTP proxy, refused`, async () => {
      expect(await send(c)).toStartWith("554 5.7.1");
      const all = await proxy.rows();
      const rcpt = all.findLast((r) => r.command === "RCPT TO" && r.target === `rcpt-${c.id}@corp.test`);
      const data = all.find((r) => r.command === "DATA" && r.target === `<${c.id}@rfc2231.test>`);
      expect(rcpt).toMatchObject({ decision: "deny", rule: null });
      expect(rcpt?.reason).toContain("undecided without");
      expect(data?.detail).toMatchObject({ hasAttachment: null });
    });
  }

  test("a plain boundary alone: no attachment to either, delivered; nothing refused reached Postfix", async () => {
    expect(hasAttachment(structures.get(CONTROL.id)!)).toBe(false);
    expect(await send(CONTROL)).toStartWith("250");
    const [copy] = await waitForSink(CONTROL.id, 1);
    expect(copy!.recipient).toBe(`rcpt-${CONTROL.id}@corp.test`);
    for (const c of REFUSED) expect(sinkCopies(c.id)).toEqual([]);
  });
});
