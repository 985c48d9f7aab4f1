/**
 * Folder names as the rules read them (docs/config.md "Globs", src/imap/folders.ts): levels separated by `/`,
 * without default-ignorable characters and in Unicode NFC, as a Subject is read. A name a client wrote with a
 * decomposed accent or a zero-width space is, to the rules, the name it looks like: a deny rule on `Geschäft` or
 * `Secret` holds those folders too. A name holding a character that makes text unknown (a bidirectional override, a
 * control, U+FFFD) does not exist for the agent. Against the real Dovecot, the folders made by the mailbox's owner.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { ImapFlow } from "imapflow";
import { FolderNames } from "../../src/imap/folders.ts";
import { connectImap, createMailbox, type TestMailbox } from "../fixtures/index.ts";
import { auditCursor, startTestProxy, type TestProxy } from "./helpers.ts";

const NFD = "Gescha\u0308ft";
const ZWSP = "Se\u200bcret";
const BIDI = "Report\u202efdp-exe";
const PLAIN = "Projects";

describe("FolderNames: the rules' reading of a name", () => {
  const names = new FolderNames("/");
  test("NFC, without invisible characters", () => {
    expect(names.toPolicy(NFD)).toBe("Gesch\u00e4ft");
    expect(names.toPolicy(`${ZWSP}/a\u00adb`)).toBe("Secret/ab");
    expect(new FolderNames(".").toPolicy(`${NFD}.x`)).toBe("Gesch\u00e4ft/x");
    expect(names.toPolicy(PLAIN)).toBe(PLAIN);
  });
  test("a name without a reading is never handed to the rules as it is: asking throws", () => {
    for (const name of [BIDI, "a\u0001b", "a\ufffdb"]) expect(() => names.toPolicy(name)).toThrow("cannot read");
  });
  test("a character that makes text unknown, or a level the reading empties, makes the name invalid", () => {
    for (const name of [BIDI, "a\u0001b", "a\u2028b", "a\ufffdb", "a/\u200b/b", "a/\u200b", "\u200b.\u200b"])
      expect({ name, invalid: names.invalid(name) }).toEqual({ name, invalid: true });
    for (const name of [NFD, ZWSP, PLAIN, "a/b\u200bc", "Tab\there"])
      expect({ name, invalid: names.invalid(name) }).toEqual({ name, invalid: false });
  });
});

describe("against Dovecot", () => {
  let mailbox: TestMailbox;
  let guarded: TestProxy;
  let open: TestProxy;
  const clients: ImapFlow[] = [];

  beforeAll(async () => {
    mailbox = await createMailbox();
    const owner = await connectImap(mailbox);
    for (const name of [NFD, `${NFD}/Q1`, ZWSP, BIDI, PLAIN]) await owner.mailboxCreate(name);
    await owner.logout();
    guarded = await startTestProxy({
      rules: `
[[rules]]
name = "not the business"
folders = ["Gesch\u00e4ft", "Gesch\u00e4ft/**", "Secret"]
action = "deny"

[[rules]]
name = "the rest"
action = "allow"
`,
    });
    open = await startTestProxy();
  });

  afterAll(async () => {
    for (const c of clients) await c.logout().catch(() => {});
    await guarded?.close();
    await open?.close();
  });

  async function agent(proxy: TestProxy): Promise<ImapFlow> {
    const c = await connectImap(mailbox, { port: proxy.port, security: "plain" });
    clients.push(c);
    return c;
  }

  test("Dovecot holds the names as the owner wrote them", async () => {
    const owner = await connectImap(mailbox);
    try {
      const paths = (await owner.list()).map((f) => f.path);
      for (const name of [NFD, `${NFD}/Q1`, ZWSP, BIDI, PLAIN]) expect(paths).toContain(name);
    } finally {
      await owner.logout();
    }
  });

  test("deny on the composed name hides the decomposed one, on `Secret` the one with a zero-width space", async () => {
    const c = await agent(guarded);
    const paths = (await c.list()).map((f) => f.path);
    expect(paths).toContain(PLAIN);
    expect(paths).toContain("INBOX");
    for (const name of [NFD, `${NFD}/Q1`, ZWSP, BIDI]) expect(paths).not.toContain(name);
    const newRows = auditCursor(guarded);
    await newRows();
    for (const name of [NFD, `${NFD}/Q1`, ZWSP]) {
      const err = await c.mailboxOpen(name).then(
        () => null,
        (e: { responseText?: string; serverResponseCode?: string }) => e,
      );
      expect({ name, code: err?.serverResponseCode }).toEqual({ name, code: "NONEXISTENT" });
    }
    const rows = (await newRows()).filter((r) => r.command === "SELECT");
    expect(rows.map((r) => [r.decision, r.rule, r.folder])).toEqual([
      ["deny", "not the business", "Gesch\u00e4ft"],
      ["deny", "not the business", "Gesch\u00e4ft/Q1"],
      ["deny", "not the business", "Secret"],
    ]);
    // Nor can it be made again in its other spelling.
    const made = await c.mailboxCreate(`${ZWSP}/x`).then(
      () => "created",
      () => "refused",
    );
    expect(made).toBe("refused");
  });

  test("every folder allowed: the decomposed and the invisible-character names are shown as they are", async () => {
    const c = await agent(open);
    const paths = (await c.list()).map((f) => f.path);
    for (const name of [NFD, `${NFD}/Q1`, ZWSP, PLAIN]) expect(paths).toContain(name);
    const box = await c.mailboxOpen(NFD);
    expect(box.path).toBe(NFD);
    await c.mailboxClose();
  });

  test("CREATE and RENAME take only names as the rules read them: no look-alike outside `Agent/**`", async () => {
    const confined = await startTestProxy({
      rules: `
[[rules]]
name = "agent area"
folders = ["Agent", "Agent/**"]
action = "allow"
`,
    });
    try {
      const c = await agent(confined);
      await c.mailboxCreate("Agent");
      const made = async (name: string) =>
        c.mailboxCreate(name).then(
          () => "created",
          (e: { serverResponseCode?: string }) => `refused ${e.serverResponseCode}`,
        );
      // `Agent` + U+200B at the top reads as `Agent`, but the server would make a folder apart, looking like it.
      expect(await made("Agent\u200b/x")).toBe("refused CANNOT");
      expect(await made("Agent/Gescha\u0308ft")).toBe("refused CANNOT");
      expect(await made("Agent/Gesch\u00e4ft")).toBe("created");
      const renamed = await c.mailboxRename("Agent/Gesch\u00e4ft", "Agent\u200b").then(
        () => "renamed",
        (e: { serverResponseCode?: string }) => `refused ${e.serverResponseCode}`,
      );
      expect(renamed).toBe("refused CANNOT");
      expect(await made("Agent/../x")).toBe("refused CANNOT");
      // Each refusal's row says which cause it was (docs/imap.md "Decisions"), as a SELECT's does.
      const refused = (await confined.rows()).filter((r) => r.decision === "deny");
      expect(refused.map((r) => [r.command, r.target, r.reason])).toEqual([
        [
          "CREATE",
          "Agent\u200b/x",
          "invalid mailbox name: not written as the rules read it (NFC, no invisible characters)",
        ],
        [
          "CREATE",
          "Agent/Gescha\u0308ft",
          "invalid mailbox name: not written as the rules read it (NFC, no invisible characters)",
        ],
        [
          "RENAME",
          "Agent\u200b",
          "invalid new mailbox name: not written as the rules read it (NFC, no invisible characters)",
        ],
        ["CREATE", "Agent/../x", "invalid mailbox name: an empty, . or .. level (a trailing delimiter among them)"],
      ]);
      const owner = await connectImap(mailbox);
      try {
        const paths = (await owner.list()).map((f) => f.path);
        expect(paths).toContain("Agent/Gesch\u00e4ft");
        expect(paths.filter((p) => p.startsWith("Agent\u200b"))).toEqual([]);
      } finally {
        await owner.logout();
      }
    } finally {
      await confined.close();
    }
  });

  test("a name with a bidirectional override does not exist for the agent, even with all folders allowed", async () => {
    const c = await agent(open);
    expect((await c.list()).map((f) => f.path)).not.toContain(BIDI);
    const err = await c.mailboxOpen(BIDI).then(
      () => null,
      (e: { serverResponseCode?: string }) => e,
    );
    expect(err?.serverResponseCode).toBe("NONEXISTENT");
    // The audit row says why: a character the rules cannot read, not one of the structural causes.
    const row = (await open.rows()).findLast((r) => r.command === "SELECT" && r.target === BIDI);
    expect(row?.reason).toBe('invalid mailbox name: a character the rules cannot read (docs/config.md "Globs")');
    const status = await c.status(BIDI, { messages: true }).then(
      () => "answered",
      () => "refused",
    );
    expect(status).toBe("refused");
  });
});
