/**
 * Lists whose items are lists with no SP between them (RFC 3501 §9: `env-to = "(" 1*address ")"`,
 * `body-type-mpart = 1*body SP media-subtype`, `Namespace = "(" 1*Namespace-Descr ")"`), as Dovecot
 * writes them. Lines below are copied from Dovecot 2.3's answers to the seeded mailbox (tests/fixtures):
 * they parse, re-encode byte for byte, and everything else about lists stays strict.
 */
import { describe, expect, test } from "bun:test";
import {
  Encoder,
  Framer,
  parseCommand,
  parseResponse,
  type Response,
  type Value,
  writeResponse,
} from "../../../src/imap/wire/index.ts";
import { bytes, frameOf, run, td } from "./helpers.ts";

function parse(line: string): { ok: true; value: Response } | { ok: false } {
  const events = run(new Framer({ role: "client" }), [bytes(line + "\r\n")], "accept");
  const e = events[0];
  if (events.length !== 1 || e?.kind !== "frame")
    throw new Error(`expected one frame, got ${events.map((x) => x.kind)}`);
  const r = parseResponse(e.frame);
  return r.ok ? { ok: true, value: r.value } : { ok: false };
}

function reencode(r: Response): string {
  const enc = new Encoder({ side: "server" });
  writeResponse(enc, r);
  return td.decode(enc.finishBytes()).replace(/\r\n$/, "");
}

/** A Value as compact text, to compare shapes without the bytes. */
function shape(v: Value): string {
  switch (v.type) {
    case "nil":
      return "NIL";
    case "number":
      return String(v.value);
    case "atom":
      return v.value;
    case "string":
      return JSON.stringify(td.decode(v.value));
    case "list":
      return `[${v.value.map(shape).join(",")}]`;
  }
}

// Dovecot-shaped lines: several To and Cc addresses, RFC 5322 groups (`(NIL NIL "Team" NIL)` ... `(NIL NIL NIL NIL)`),
// multipart/mixed with a text part and an attachment, a message/rfc822 part (an envelope and a body with SP between).
const DOVECOT: Array<[string, string, string]> = [
  [
    "two To, two Cc, multipart/mixed",
    '* 16 FETCH (ENVELOPE ("Thu, 02 Jul 2026 08:00:00 +0000" "Please sign contract 16" (("Pat Boss" NIL "boss" ' +
      '"corp.test")) (("Pat Boss" NIL "boss" "corp.test")) (("Pat Boss" NIL "boss" "corp.test")) (("Me" NIL "me" ' +
      '"mailgator.test")(NIL NIL "dave" "partner.test")) ((NIL NIL "carol" "corp.test")(NIL NIL "dave" ' +
      '"partner.test")) NIL NIL "<inbox.16.s7@seed.mailgator.test>") BODYSTRUCTURE (("text" "plain" ("charset" ' +
      '"utf-8") NIL NIL "7bit" 104 7 NIL NIL NIL NIL)("application" "pdf" ("name" "report-16.pdf") NIL NIL ' +
      '"base64" 4408 NIL ("attachment" ("filename" "report-16.pdf")) NIL NIL) "mixed" ("boundary" ' +
      '"=_mailgator_7_16") NIL NIL NIL))',
    '[[["Me",NIL,"me","mailgator.test"],[NIL,NIL,"dave","partner.test"]],' +
      '[[NIL,NIL,"carol","corp.test"],[NIL,NIL,"dave","partner.test"]]]',
  ],
  [
    "a group in To",
    '* 11 FETCH (ENVELOPE ("Sat, 02 May 2026 16:00:00 +0000" "Action required: invoice 11" ' +
      '(("notifications@shop.test" NIL "spam" "evil.test")) (("notifications@shop.test" NIL "spam" "evil.test")) ' +
      '(("notifications@shop.test" NIL "spam" "evil.test")) ((NIL NIL "Team" NIL)(NIL NIL "carol" "corp.test")(NIL ' +
      'NIL "me" "mailgator.test")(NIL NIL NIL NIL)) NIL NIL NIL "<inbox.11.s7@seed.mailgator.test>"))',
    '[[[NIL,NIL,"Team",NIL],[NIL,NIL,"carol","corp.test"],[NIL,NIL,"me","mailgator.test"],[NIL,NIL,NIL,NIL]],NIL]',
  ],
  [
    "undisclosed-recipients",
    '* 20 FETCH (UID 20 ENVELOPE ("Wed, 19 Aug 2026 20:48:00 +0000" "Password reset code 20" (("Shop ' +
      'Notifications" NIL "notifications" "shop.test")) (("Shop Notifications" NIL "notifications" "shop.test")) ' +
      '(("Shop Notifications" NIL "notifications" "shop.test")) ((NIL NIL "undisclosed-recipients" NIL)(NIL NIL ' +
      'NIL NIL)) ((NIL NIL "carol" "corp.test")) NIL NIL "<inbox.20.s7@seed.mailgator.test>") FLAGS (\\Seen))',
    '[[[NIL,NIL,"undisclosed-recipients",NIL],[NIL,NIL,NIL,NIL]],[[NIL,NIL,"carol","corp.test"]]]',
  ],
  [
    "multipart/alternative inside multipart/mixed, BODY (non-extensible)",
    '* 3 FETCH (BODY ((("text" "plain" ("charset" "utf-8") NIL NIL "7bit" 5 1)("text" "html" ("charset" "utf-8") ' +
      'NIL NIL "7bit" 12 1) "alternative")("application" "pdf" ("name" "a.pdf") NIL NIL "base64" 8) "mixed"))',
    "",
  ],
  [
    "message/rfc822 part: envelope SP body",
    '* 4 FETCH (BODYSTRUCTURE (("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 4 1 NIL NIL NIL ' +
      'NIL)("message" "rfc822" NIL NIL NIL "7bit" 300 ("Thu, 02 Jul 2026 08:00:00 +0000" "inner" ((NIL NIL "a" ' +
      '"x.test")) ((NIL NIL "a" "x.test")) ((NIL NIL "a" "x.test")) ((NIL NIL "b" "y.test")(NIL NIL "c" "y.test")) ' +
      'NIL NIL NIL NIL) ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 6 1 NIL NIL NIL NIL) 12 NIL NIL NIL ' +
      'NIL) "mixed" ("boundary" "b1") ("inline" NIL) NIL NIL))',
    "",
  ],
  ["several namespaces", '* NAMESPACE (("" "/")("Virtual/" "/")) (("~" "/")) (("#shared/" "/")("#public/" "/"))', ""],
];

describe("Dovecot lists with no SP between list items", () => {
  for (const [name, line, toCc] of DOVECOT) {
    test(`${name}: parses and re-encodes byte for byte`, () => {
      const r = parse(line);
      if (!r.ok) throw new Error(`did not parse: ${line}`);
      expect(reencode(r.value)).toBe(line);
      if (toCc !== "" && r.value.type === "FETCH") {
        const env = r.value.attrs.find((a) => a.name === "ENVELOPE");
        if (env?.name !== "ENVELOPE" || env.value.type !== "list") throw new Error("no envelope");
        expect(shape({ type: "list", value: env.value.value.slice(5, 7) })).toBe(toCc);
      }
    });
  }

  test("multipart BODYSTRUCTURE: the parts are list items, then the subtype", () => {
    const r = parse(DOVECOT[0]![1]);
    if (!r.ok || r.value.type !== "FETCH") throw new Error("expected FETCH");
    const bs = r.value.attrs.find((a) => a.name === "BODYSTRUCTURE");
    if (bs?.name !== "BODYSTRUCTURE" || bs.value.type !== "list") throw new Error("no bodystructure");
    expect(bs.value.value.map((v) => v.type)).toEqual(["list", "list", "string", "list", "nil", "nil", "nil"]);
  });

  test("namespaces with no SP between descriptions", () => {
    const r = parse(DOVECOT[5]![1]);
    if (!r.ok) throw new Error("expected NAMESPACE");
    expect(r.value).toMatchObject({
      type: "NAMESPACE",
      personal: [
        { prefix: "", delimiter: "/" },
        { prefix: "Virtual/", delimiter: "/" },
      ],
      shared: [{ prefix: "#shared/" }, { prefix: "#public/" }],
    });
  });

  test("a SP between adjacent lists is accepted too, and written the grammar's way", () => {
    const r = parse('* 1 FETCH (ENVELOPE (NIL NIL NIL NIL NIL ((NIL NIL "a" "x") (NIL NIL "b" "x")) NIL NIL NIL NIL))');
    if (!r.ok) throw new Error("expected FETCH");
    expect(reencode(r.value)).toBe(
      '* 1 FETCH (ENVELOPE (NIL NIL NIL NIL NIL ((NIL NIL "a" "x")(NIL NIL "b" "x")) NIL NIL NIL NIL))',
    );
  });
});

describe("everything else about lists stays strict", () => {
  const BAD = [
    '* 1 FETCH (ENVELOPE ("a""b"))', // two strings with no SP
    "* 1 FETCH (ENVELOPE (NIL(NIL)))", // an atom then a list
    "* 1 FETCH (ENVELOPE ((NIL)NIL))", // a list then an atom
    '* 1 FETCH (ENVELOPE ((NIL)"x"))', // a list then a string
    "* 1 FETCH (ENVELOPE ((NIL)  (NIL)))", // two spaces
    "* 1 FETCH (ENVELOPE ((NIL) ))", // trailing space
    "* 1 FETCH (FLAGS (\\Seen)UID 1)", // FETCH items need their SP
    '* 1 FETCH (BODYSTRUCTURE ("a")(NIL))', // the FETCH attribute list is not a value list
    '* NAMESPACE (("" "/")) (("~" "/"))NIL',
  ];
  for (const line of BAD) test(JSON.stringify(line), () => expect(parse(line).ok).toBe(false));

  test("agent commands keep SP between list items", () => {
    for (const line of [
      "a FETCH 1 (FLAGS)(UID)\r\n",
      "a SEARCH (SEEN)(DRAFT)\r\n",
      "a SEARCH ((SEEN)(DRAFT))\r\n",
      "a FETCH 1 (BODY.PEEK[HEADER.FIELDS (A)](UID))\r\n",
    ]) {
      expect(parseCommand(frameOf(line)).ok).toBe(false);
    }
    expect(parseCommand(frameOf("a SEARCH ((SEEN) (DRAFT))\r\n")).ok).toBe(true);
  });
});
