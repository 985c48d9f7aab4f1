import { describe, expect, test } from "bun:test";
import { prngBelow } from "../../../scripts/upstreams/seed.ts";
import { decodeMutf7, encodeMutf7, isInbox } from "../../../src/imap/wire/index.ts";

describe("modified UTF-7", () => {
  const pairs: Array<[string, string]> = [
    ["INBOX", "INBOX"],
    ["&", "&-"],
    ["a&b", "a&-b"],
    ["Café", "Caf&AOk-"],
    ["日本語", "&ZeVnLIqe-"],
    ["Entwürfe/Ablage", "Entw&APw-rfe/Ablage"],
    ["~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"],
    ["😀", "&2D3eAA-"],
    ["é&é", "&AOk-&-&AOk-"],
    ["", ""],
  ];
  for (const [plain, enc] of pairs) {
    test(`${JSON.stringify(plain)} <-> ${enc}`, () => {
      expect(encodeMutf7(plain)).toBe(enc);
      expect(decodeMutf7(enc)).toBe(plain);
    });
  }

  const rejected: Array<[string, string]> = [
    ["&AEk-NBOX", "printable ASCII encoded (I)"],
    ["&ACY-", "& encoded instead of &-"],
    ["&AOk", "unterminated shift"],
    ["&AOk=-", "padding"],
    ["&AOl-", "non-zero leftover bits"],
    ["&AOkA-", "leftover of six bits or more"],
    ["&AOk-&AOk-", "two adjacent shifts"],
    ["&2D0-", "unpaired high surrogate"],
    ["&3gA-", "unpaired low surrogate"],
    ["&AO/-", "standard base64 / instead of ,"],
    ["Caf\u00e9", "8-bit"],
    ["a\tb", "control character"],
    ["&-&", "unterminated after &-"],
  ];
  for (const [input, why] of rejected) {
    test(`rejects ${JSON.stringify(input)}: ${why}`, () => expect(decodeMutf7(input)).toBeNull());
  }

  test("round trip of random strings", () => {
    const rand = prngBelow(7);
    for (let i = 0; i < 2000; i++) {
      let s = "";
      const len = rand(12);
      for (let k = 0; k < len; k++) {
        const r = rand(4);
        s +=
          r === 0
            ? String.fromCharCode(0x20 + rand(95))
            : r === 1
              ? "&"
              : r === 2
                ? String.fromCharCode(0xa0 + rand(0x2000))
                : "😀";
      }
      expect(decodeMutf7(encodeMutf7(s))).toBe(s);
    }
  });
});

describe("INBOX (RFC 3501 §5.1)", () => {
  test("is INBOX in any ASCII case, and only that", () => {
    expect(["INBOX", "inbox", "InBoX", "iNBOX"].map(isInbox)).toEqual([true, true, true, true]);
    // A dotless i upper-cases to I, but `ınbox` is another folder at the server (Dovecot), as the rules' case folding
    // has it (dotless ı is not i); so are INBOX with a combining mark, the Kelvin sign or full-width letters.
    expect(["ınbox", "İnbox", "INBOX/", "INBOX2", "INBO", "ＩＮＢＯＸ", "inbo\u0301x"].map(isInbox)).toEqual(
      Array(7).fill(false),
    );
  });
});
