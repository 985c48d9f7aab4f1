/**
 * The To and Cc headers class each envelope recipient (docs/smtp.md "Send semantics"), through the proxy against
 * the real Postfix: a header address readers cannot read must not class a recipient as named there. `To: rcpt- x@…`
 * is no addr-spec (two words without a dot between them); read as `rcpt-x@…`, it made that envelope recipient a To
 * recipient, while readers (Dovecot's ENVELOPE among them) see no such address: a blind copy that a rule refusing
 * blind copies let through. Now the To header is unknown, and the bcc rule denies.
 */

import { expect, test } from "bun:test";
import { useBlindCopyProxy } from "./blind-copy-fixture.ts";
import { marker, sinkCopies, waitForSink } from "./helpers.ts";

const { send, expectBlindCopyRefused } = useBlindCopyProxy();
const run = marker();

test("a To address split by a space classes nobody: the blind copy is refused, nothing reaches Postfix", async () => {
  const id = `${run}-split`;
  await expectBlindCopyRefused(id, `rcpt-${id}@corp.test`, `rcpt- ${id}@corp.test`);
  // The control, sent after it over the same session, arrives; the refused message never did.
  const control = `${run}-control`;
  expect(await send(control, `rcpt-${control}@corp.test`, `<rcpt-${control}@corp.test>`)).toStartWith("250");
  await waitForSink(control, 1);
  expect(sinkCopies(id)).toEqual([]);
});
