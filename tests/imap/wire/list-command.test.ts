/**
 * The LIST-EXTENDED (RFC 5258), SPECIAL-USE (RFC 6154) and LIST-STATUS (RFC 5819) forms of LIST: parsed, refused,
 * written back the same, and CHILDINFO written in the response (RFC 5258 §3.5).
 */
import { describe, expect, test } from "bun:test";
import { Encoder, MAX_LIST_PATTERNS, parseCommand, writeCommand, writeResponse } from "../../../src/imap/wire/index.ts";
import { frameOf, td } from "./helpers.ts";

function parse(s: string): ReturnType<typeof parseCommand> {
  return parseCommand(frameOf(`${s}\r\n`));
}

function ok(s: string): Record<string, unknown> {
  const r = parse(s);
  if (!r.ok) throw new Error(`${s}: ${r.error.message}`);
  return r.value as unknown as Record<string, unknown>;
}

function refused(s: string): string {
  const r = parse(s);
  if (r.ok) throw new Error(`${s}: parsed`);
  return r.error.code;
}

describe("LIST-EXTENDED commands", () => {
  test("selection options, several patterns, return options with STATUS", () => {
    expect(
      ok('a LIST (SUBSCRIBED RECURSIVEMATCH) "" ("INBOX" "Archive/%") RETURN (CHILDREN STATUS (MESSAGES))'),
    ).toMatchObject({
      name: "LIST",
      reference: "",
      pattern: "INBOX",
      patterns: ["INBOX", "Archive/%"],
      selectOptions: ["SUBSCRIBED", "RECURSIVEMATCH"],
      returnOptions: ["CHILDREN", "STATUS"],
      statusItems: ["MESSAGES"],
    });
    expect(ok('a list (special-use recursivematch) "" "%"')).toMatchObject({
      selectOptions: ["SPECIAL-USE", "RECURSIVEMATCH"],
    });
    expect(ok('a LIST (REMOTE) "" %')).toMatchObject({ selectOptions: ["REMOTE"], pattern: "%" });
    expect(ok('a LIST () "" %')).toMatchObject({ selectOptions: [], returnOptions: [] });
    expect(ok('a LIST "" % RETURN ()')).toMatchObject({ returnOptions: [] });
    // One pattern in parentheses is one pattern; no `patterns` then.
    expect(ok('a LIST "" ("a/%")')["patterns"]).toBeUndefined();
    expect(ok('a LIST "" * RETURN (STATUS (UNSEEN UIDNEXT UIDVALIDITY RECENT MESSAGES) SPECIAL-USE)')).toMatchObject({
      statusItems: ["UNSEEN", "UIDNEXT", "UIDVALIDITY", "RECENT", "MESSAGES"],
      returnOptions: ["STATUS", "SPECIAL-USE"],
    });
  });

  test("what RFC 5258 §3 makes BAD, and what is not offered, is refused", () => {
    expect(refused('a LIST (RECURSIVEMATCH) "" ""')).toBe("syntax");
    expect(refused('a LIST (RECURSIVEMATCH REMOTE) "" ""')).toBe("syntax");
    expect(refused('a LIST (IMAPTEST) "" ""')).toBe("unsupported");
    expect(refused('a LIST "" "" RETURN (IMAPTEST)')).toBe("unsupported");
    expect(refused('a LIST "" "" RETURN (MYRIGHTS)')).toBe("unsupported");
    expect(refused('a LIST "" () RETURN (CHILDREN)')).toBe("syntax");
    expect(refused('a LIST "" * RETURN (STATUS ())')).toBe("syntax");
    expect(refused('a LIST "" * RETURN (STATUS (MAILBOXID))')).toBe("unsupported");
    expect(refused('a LIST "" * RETURN (STATUS (MESSAGES) STATUS (UNSEEN))')).toBe("unsupported");
    expect(refused('a LIST "" * RETURN CHILDREN')).toBe("syntax");
    // LSUB has no extended forms.
    expect(refused('a LSUB (SUBSCRIBED) "" *')).toBe("syntax");
    expect(refused('a LSUB "" ("a" "b")')).toBe("syntax");
    // Patterns never carry 8-bit names (docs/protocol.md §4).
    expect(refused('a LIST "" ("a" "\u00e9")')).toBe("mailbox-name");
  });

  test(`at most MAX_LIST_PATTERNS (${MAX_LIST_PATTERNS}) patterns`, () => {
    const names = (n: number) => Array.from({ length: n }, (_, i) => `"f${i}"`).join(" ");
    expect(ok(`a LIST "" (${names(MAX_LIST_PATTERNS)})`)["patterns"]).toHaveLength(MAX_LIST_PATTERNS);
    expect(refused(`a LIST "" (${names(MAX_LIST_PATTERNS + 1)})`)).toBe("too-many-items");
  });

  test("written back as parsed", () => {
    for (const s of [
      'a LIST (SUBSCRIBED RECURSIVEMATCH) "" (INBOX Archive/%) RETURN (CHILDREN STATUS (MESSAGES UNSEEN))',
      'a LIST "" * RETURN (SPECIAL-USE)',
    ]) {
      const r = parse(s);
      if (!r.ok) throw new Error(r.error.message);
      const enc = new Encoder({ side: "client" });
      writeCommand(enc, r.value);
      const wire = td.decode(enc.finishBytes());
      expect(wire).toBe(`${s}\r\n`);
    }
  });
});

describe("LIST responses", () => {
  test("CHILDINFO extended data (RFC 5258 §3.5)", () => {
    const enc = new Encoder({ side: "server" });
    writeResponse(enc, {
      type: "LIST",
      attributes: ["\\NonExistent", "\\HasChildren"],
      delimiter: "/",
      raw: "",
      mailbox: "a b",
      childInfo: ["SUBSCRIBED"],
    });
    expect(td.decode(enc.finishBytes())).toBe(
      '* LIST (\\NonExistent \\HasChildren) "/" "a b" ("CHILDINFO" ("SUBSCRIBED"))\r\n',
    );
  });
});
