import { describe, expect, test } from "bun:test";
import { prngBelow } from "../../scripts/upstreams/seed.ts";
import { compilePolicy, type Request, type RuleSpec } from "../../src/policy/index.ts";

const SEED: RuleSpec[] = [
  { name: "Transactional", folders: ["INBOX"], from: ["notifications@*"], action: "allow", operations: ["read"] },
  { name: "Deny everything else", action: "deny" },
];

type Row = [label: string, rules: RuleSpec[], req: Request, expected: string | null];

/** Expected: name of the deciding rule, "default" for the default deny, null for undecided. */
function check(rows: Row[]): void {
  for (const [label, rules, req, expected] of rows) {
    test(label, () => {
      const policy = compilePolicy(rules);
      const outcome = policy.evaluatePartial(req);
      if (expected === null) {
        expect(outcome.decided).toBe(false);
        expect(policy.evaluate(req).action).toBe("deny");
        return;
      }
      expect(outcome.decided).toBe(true);
      const d = policy.evaluate(req);
      if (expected === "default") {
        expect(d.rule).toBeNull();
        expect(d.action).toBe("deny");
      } else {
        expect(d.rule).toBe(expected);
        expect(d.ruleIndex).toBe(rules.findIndex((r) => r.name === expected));
        expect(d.reason).toContain(expected);
      }
    });
  }
}

const allow = (name: string, extra: Partial<RuleSpec>): RuleSpec => ({ name, action: "allow", ...extra });
const deny = (name: string, extra: Partial<RuleSpec>): RuleSpec => ({ name, action: "deny", ...extra });

describe("seed config", () => {
  check([
    [
      "notifications in INBOX → rule 1",
      SEED,
      { operation: "mail:read", folder: "INBOX", from: ["notifications@shop.test"] },
      "Transactional",
    ],
    [
      "boss in INBOX → rule 2",
      SEED,
      { operation: "mail:read", folder: "INBOX", from: ["boss@corp.test"] },
      "Deny everything else",
    ],
    [
      "Archive → rule 2",
      SEED,
      { operation: "mail:read", folder: "Archive", from: ["notifications@shop.test"] },
      "Deny everything else",
    ],
    [
      "send → rule 2",
      SEED,
      { operation: "mail:send", folder: null, from: ["me@x.test"], to: ["a@b.test"] },
      "Deny everything else",
    ],
    [
      "delete in INBOX → rule 2",
      SEED,
      { operation: "mail:delete", folder: "INBOX", from: ["notifications@shop.test"] },
      "Deny everything else",
    ],
    ["read INBOX, sender unknown → undecided", SEED, { operation: "mail:read", folder: "INBOX" }, null],
    [
      "folder:read of Archive, sender unknown → rule 2 decides",
      SEED,
      { operation: "folder:read", folder: "Archive" },
      "Deny everything else",
    ],
  ]);
  test("folder visibility and per-message dependence", () => {
    const p = compilePolicy(SEED);
    expect(p.folderVisible("INBOX", null)).toBe(true);
    expect(p.folderVisible("inbox", null)).toBe(true);
    expect(p.folderVisible("Archive", null)).toBe(false);
    expect([...p.messageDependence("mail:read", "INBOX", null)]).toEqual(["from"]);
    expect(p.messageDependence("mail:read", "Archive", null).size).toBe(0);
  });
});

describe("folder globs", () => {
  const one = [allow("one", { folders: ["Archive/*"] })];
  const any = [allow("any", { folders: ["Archive/**"] })];
  const exact = [allow("exact", { folders: ["Archive"] })];
  const mid = [allow("mid", { folders: ["**/Sent"] })];
  const f = (folder: string): Request => ({ operation: "mail:read", folder });
  check([
    ["Archive/* matches Archive/2025", one, f("Archive/2025"), "one"],
    ["Archive/* does not match Archive", one, f("Archive"), "default"],
    ["Archive/* does not match Archive/2025/Q1", one, f("Archive/2025/Q1"), "default"],
    ["Archive/** matches Archive/2025", any, f("Archive/2025"), "any"],
    ["Archive/** matches Archive/2025/Q1", any, f("Archive/2025/Q1"), "any"],
    ["Archive/** does not match Archive itself", any, f("Archive"), "default"],
    ["Archive/** does not match Archived/x", any, f("Archived/x"), "default"],
    ["Archive matches only Archive", exact, f("Archive"), "exact"],
    ["Archive does not match Archive/2025", exact, f("Archive/2025"), "default"],
    ["**/Sent matches Sent", mid, f("Sent"), "mid"],
    ["**/Sent matches a/b/Sent", mid, f("a/b/Sent"), "mid"],
    ["**/Sent does not match Sentx", mid, f("Sentx"), "default"],
    ["INBOX matches inbox", [allow("inbox", { folders: ["INBOX"] })], f("inbox"), "inbox"],
    ["inbox matches INBOX", [allow("inbox", { folders: ["inbox"] })], f("INBOX"), "inbox"],
    ["INBOX/* matches Inbox/Sub", [allow("sub", { folders: ["INBOX/*"] })], f("Inbox/Sub"), "sub"],
    ["? is one character", [allow("q", { folders: ["Archive/202?"] })], f("Archive/2025"), "q"],
    ["? does not cross a level", [allow("q", { folders: ["a?b"] })], f("a/b"), "default"],
    ["regex specials are literal", [allow("dot", { folders: ["a.b"] })], f("axb"), "default"],
    ["list: any item", [allow("l", { folders: ["Drafts", "Sent"] })], f("Sent"), "l"],
    [
      "a send has no folder: folder rules do not match",
      [allow("f", { folders: ["**"] })],
      { operation: "mail:send", folder: null },
      "default",
    ],
  ]);
});

describe("address and subject fields", () => {
  const corp = [allow("corp", { to: ["*@corp.test"] })];
  check([
    [
      "from glob, case-insensitive",
      [allow("n", { from: ["notifications@*"] })],
      { operation: "mail:read", from: ["NOTIFICATIONS@Shop.Test"] },
      "n",
    ],
    [
      "from: every author must match",
      [allow("n", { from: ["notifications@*"] })],
      { operation: "mail:read", from: ["notifications@shop.test", "spam@evil.test"] },
      "default",
    ],
    [
      "from: a deny rule matches when any author does (a co-author must not carry the message past it)",
      [deny("not boss", { from: ["boss@corp.test"] }), allow("rest", {})],
      { operation: "mail:read", from: ["alice@corp.test", "boss@corp.test"] },
      "not boss",
    ],
    [
      "from: a deny rule whose glob no author matches does not match",
      [deny("not boss", { from: ["boss@corp.test"] }), allow("rest", {})],
      { operation: "mail:read", from: ["alice@corp.test", "carol@corp.test"] },
      "rest",
    ],
    [
      "from: empty From matches nothing",
      [allow("n", { from: ["*"] })],
      { operation: "mail:read", from: [] },
      "default",
    ],
    ["to: any address matches", corp, { operation: "mail:read", to: ["x@evil.test", "boss@corp.test"] }, "corp"],
    ["to: none matches", corp, { operation: "mail:read", to: ["x@evil.test"] }, "default"],
    [
      "to glob does not match a lookalike domain",
      corp,
      { operation: "mail:read", to: ["a@corp.test.evil"] },
      "default",
    ],
    ["cc", [allow("cc", { cc: ["alice@*"] })], { operation: "mail:read", cc: ["alice@friends.test"] }, "cc"],
    [
      "bcc",
      [allow("bcc", { bcc: ["alice@*"] })],
      { operation: "mail:send", to: ["alice@friends.test"], bcc: ["alice@friends.test"] },
      "bcc",
    ],
    [
      "bcc not set → no match",
      [allow("bcc", { bcc: ["*"] })],
      { operation: "mail:send", to: ["a@b.test"], bcc: [] },
      "default",
    ],
    [
      "subject glob",
      [allow("s", { subject: ["[JIRA] *"] })],
      { operation: "mail:read", subject: "[jira] Ticket 1" },
      "s",
    ],
    [
      "subject must match whole",
      [allow("s", { subject: ["Invoice"] })],
      { operation: "mail:read", subject: "Invoice 42" },
      "default",
    ],
    ["subject ?", [allow("s", { subject: ["Invoice ??"] })], { operation: "mail:read", subject: "Invoice 42" }, "s"],
    [
      "has_attachment true",
      [allow("a", { hasAttachment: true })],
      { operation: "mail:read", hasAttachment: true },
      "a",
    ],
    [
      "has_attachment false vs true",
      [allow("a", { hasAttachment: false })],
      { operation: "mail:read", hasAttachment: true },
      "default",
    ],
    [
      "several conditions are AND",
      [allow("and", { from: ["boss@*"], subject: ["Hi"] })],
      { operation: "mail:read", from: ["boss@corp.test"], subject: "Bye" },
      "default",
    ],
  ]);
});

describe("operations, shorthands, agents, order", () => {
  const readOnly = [allow("r", { operations: ["read"] })];
  check([
    ["read covers folder:read", readOnly, { operation: "folder:read", folder: "INBOX" }, "r"],
    ["read covers mail:read", readOnly, { operation: "mail:read", folder: "INBOX" }, "r"],
    ["read does not cover mail:flag", readOnly, { operation: "mail:flag", folder: "INBOX" }, "default"],
    [
      "write covers mail:delete",
      [allow("w", { operations: ["write"] })],
      { operation: "mail:delete", folder: "INBOX" },
      "w",
    ],
    [
      "write covers folder:write",
      [allow("w", { operations: ["write"] })],
      { operation: "folder:write", folder: "X" },
      "w",
    ],
    [
      "write does not cover mail:send",
      [allow("w", { operations: ["write"] })],
      { operation: "mail:send", folder: null },
      "default",
    ],
    ["send covers mail:send", [allow("s", { operations: ["send"] })], { operation: "mail:send", folder: null }, "s"],
    ["all covers mail:move", [allow("a", { operations: ["all"] })], { operation: "mail:move", folder: "X" }, "a"],
    ["omitted operations = all", [allow("a", {})], { operation: "mail:append", folder: "X" }, "a"],
    [
      "agent-scoped rule matches its agent",
      [allow("ag", { agents: ["bot"] })],
      { operation: "mail:read", agent: "bot" },
      "ag",
    ],
    [
      "agent-scoped rule skips others",
      [allow("ag", { agents: ["bot"] })],
      { operation: "mail:read", agent: "other" },
      "default",
    ],
    [
      "agent-scoped rule skips pass-through",
      [allow("ag", { agents: ["bot"] })],
      { operation: "mail:read", agent: null },
      "default",
    ],
    [
      "first match wins over a later allow",
      [{ name: "deny boss", action: "deny", from: ["boss@*"] }, allow("all", {})],
      { operation: "mail:read", from: ["boss@corp.test"] },
      "deny boss",
    ],
    [
      "first match wins over a later deny",
      [allow("all", {}), { name: "deny boss", action: "deny", from: ["boss@*"] }],
      { operation: "mail:read", from: ["boss@corp.test"] },
      "all",
    ],
    ["no rules → default deny", [], { operation: "mail:read", folder: "INBOX" }, "default"],
    ["no match → default deny", [allow("x", { folders: ["X"] })], { operation: "mail:read", folder: "Y" }, "default"],
  ]);

  test("ask is reported as ask", () => {
    const p = compilePolicy([{ name: "ask", action: "ask", operations: ["mail:send"] }]);
    expect(p.evaluate({ operation: "mail:send", folder: null }).action).toBe("ask");
  });

  test("an unknown field only matters while no earlier rule decides", () => {
    const p = compilePolicy([
      { name: "deny archive", action: "deny", folders: ["Archive/**"] },
      allow("boss", { from: ["boss@*"] }),
    ]);
    expect(p.evaluatePartial({ operation: "mail:read", folder: "Archive/2025" }).decided).toBe(true);
    const open = p.evaluatePartial({ operation: "mail:read", folder: "INBOX" });
    expect(open.decided).toBe(false);
    if (!open.decided) {
      expect([...open.needs]).toEqual(["from"]);
      expect([...open.possible].sort()).toEqual(["allow", "deny"]);
    }
  });

  test("send recipient checked before headers: refused only if no class could allow it", () => {
    const p = compilePolicy([
      { name: "no hidden recipients", action: "deny", bcc: ["*"] },
      allow("corp", { to: ["*@corp.test"], operations: ["send"] }),
    ]);
    const evil = p.evaluatePartial({ operation: "mail:send", folder: null, to: ["evil@x.test"] });
    expect(evil.decided).toBe(true);
    const ok = p.evaluatePartial({ operation: "mail:send", folder: null, to: ["a@corp.test"] });
    expect(ok.decided).toBe(false);
    expect(
      p.evaluate({ operation: "mail:send", folder: null, to: ["a@corp.test"], cc: [], bcc: ["a@corp.test"] }).rule,
    ).toBe("no hidden recipients");
    expect(p.evaluate({ operation: "mail:send", folder: null, to: ["a@corp.test"], cc: [], bcc: [] }).rule).toBe(
      "corp",
    );
  });
});

describe("candidateRules: the rules that can apply to an operation in a folder", () => {
  const p = compilePolicy([
    { name: "bot deny", action: "deny", agents: ["bot"] },
    allow("alerts", { folders: ["INBOX"], from: ["alerts@*"], operations: ["read"] }),
    { name: "no secrets", action: "deny", folders: ["INBOX"], subject: ["*secret*"], operations: ["read"] },
    allow("flag", { folders: ["INBOX"], operations: ["mail:flag"] }),
    allow("read archive", { folders: ["Archive/**"], operations: ["read"] }),
    { name: "deny all", action: "deny" },
    allow("never", { folders: ["INBOX"], operations: ["read"] }),
  ]);
  const names = (op: Parameters<typeof p.candidateRules>[0], folder: string, agent: string | null) =>
    p.candidateRules(op, folder, agent).map((r) => r.name);
  test("in order, up to and including the first rule without message conditions", () => {
    expect(names("mail:read", "INBOX", "a")).toEqual(["alerts", "no secrets", "deny all"]);
    expect(names("mail:read", "inbox", null)).toEqual(["alerts", "no secrets", "deny all"]);
  });
  test("the operation, the agent and the folder each leave rules out", () => {
    expect(names("mail:flag", "INBOX", "a")).toEqual(["flag"]);
    expect(names("mail:read", "Archive/2024", "a")).toEqual(["read archive"]);
    expect(names("mail:read", "INBOX", "bot")).toEqual(["bot deny"]);
    expect(names("mail:read", "Other", "a")).toEqual(["deny all"]);
  });
  test("empty when no rule matches", () => {
    expect(compilePolicy([allow("x", { folders: ["X"] })]).candidateRules("mail:read", "Y", null)).toEqual([]);
  });
});

describe("shadowed rules", () => {
  test("a rule after an unconditional rule covering its operations is shadowed", () => {
    const p = compilePolicy([
      { name: "deny writes", action: "deny", operations: ["write"] },
      allow("flag inbox", { folders: ["INBOX"], operations: ["mail:flag"] }),
      allow("read", { operations: ["read"] }),
      { name: "deny all", action: "deny" },
      allow("never", { folders: ["X"] }),
    ]);
    expect(p.shadowed().map((s) => [s.name, s.by])).toEqual([
      ["flag inbox", "deny writes"],
      ["never", "deny all"],
    ]);
  });
  test("agent scoping narrows shadowing", () => {
    const p = compilePolicy([{ name: "bot deny", action: "deny", agents: ["bot"] }, allow("all", {})]);
    expect(p.shadowed()).toEqual([]);
  });
});

describe("subtreeVisible: every folder below, whatever its name", () => {
  const deny = (name: string, more: Partial<RuleSpec> = {}): RuleSpec => ({ name, action: "deny", ...more });
  const ok = (name: string, more: Partial<RuleSpec> = {}): RuleSpec => ({ name, action: "allow", ...more });
  const rows: Array<[label: string, rules: RuleSpec[], folder: string, agent: string | null, expected: boolean]> = [
    [
      "an allow of A/** covers everything below A and below A/b",
      [ok("a", { folders: ["A", "A/**"] }), deny("rest")],
      "A",
      null,
      true,
    ],
    ["... and below a deeper folder", [ok("a", { folders: ["A/**"] }), deny("rest")], "A/b/c", null, true],
    ["... but not below B", [ok("a", { folders: ["A/**"] }), deny("rest")], "B", null, false],
    ["folder names are case-insensitive", [ok("a", { folders: ["Archive/**"] }), deny("rest")], "archive", null, true],
    ["one level (*) leaves deeper names hidden", [ok("top", { folders: ["*"] }), deny("rest")], "Foo", null, false],
    [
      "a hidden child ahead of the allow",
      [deny("hidden", { folders: ["P/Hidden", "P/Hidden/**"] }), ok("own", { folders: ["P", "P/*"] }), deny("rest")],
      "P",
      null,
      false,
    ],
    [
      "P/* allows one level: below P/Leaf is hidden",
      [ok("own", { folders: ["P", "P/*"] }), deny("rest")],
      "P/Leaf",
      null,
      false,
    ],
    [
      "a deny elsewhere does not matter",
      [deny("hidden", { folders: ["P/Hidden/**"] }), ok("all", { folders: ["**"] })],
      "Q",
      null,
      true,
    ],
    [
      "below the hidden folder itself",
      [deny("hidden", { folders: ["P/Hidden/**"] }), ok("all", { folders: ["**"] })],
      "P/Hidden",
      null,
      false,
    ],
    [
      "a deny with message conditions hides no folder",
      [deny("spam", { folders: ["A/**"], from: ["spam@*"] }), ok("a", { folders: ["A/**"] })],
      "A",
      null,
      true,
    ],
    [
      "a deny of some operations: another operation still shows every folder",
      [deny("keep", { folders: ["A/secret"], operations: ["mail:delete"] }), ok("a", { folders: ["A/**"] })],
      "A",
      null,
      true,
    ],
    [
      "a deny of every operation on one child",
      [deny("keep", { folders: ["A/secret"] }), ok("a", { folders: ["A/**"] })],
      "A",
      null,
      false,
    ],
    [
      "a partial allow, then the rest allowed",
      [ok("some", { folders: ["A/x*"] }), ok("a", { folders: ["A/**"] })],
      "A",
      null,
      true,
    ],
    ["a partial allow, then the rest denied", [ok("some", { folders: ["A/x*"] }), deny("rest")], "A", null, false],
    ["wildcards in the covering prefix", [ok("a", { folders: ["A*/**"] }), deny("rest")], "Abc", null, true],
    ["? is one character", [ok("a", { folders: ["A/?/**"] }), deny("rest")], "A/xy", null, false],
    ["a leading ** is not trusted to cover", [ok("sent", { folders: ["**/Sent"] }), deny("rest")], "X", null, false],
    ["** alone covers", [ok("all", { folders: ["**"] })], "X", null, true],
    ["a rule without folders covers", [ok("all", {})], "X/y", null, true],
    [
      "a rule for another agent does not count",
      [ok("bot", { folders: ["A/**"], agents: ["bot"] }), deny("rest")],
      "A",
      "other",
      false,
    ],
    [
      "... it counts for its agent",
      [ok("bot", { folders: ["A/**"], agents: ["bot"] }), deny("rest")],
      "A",
      "bot",
      true,
    ],
    [
      "... and not in pass-through mode (no agent)",
      [ok("bot", { folders: ["A/**"], agents: ["bot"] }), deny("rest")],
      "A",
      null,
      false,
    ],
    ["only mail:send allowed: nothing is visible", [ok("send", { operations: ["send"] })], "A", null, false],
    ["no rules", [], "A", null, false],
  ];
  for (const [label, rules, folder, agent, expected] of rows) {
    test(label, () => {
      expect(compilePolicy(rules).subtreeVisible(folder, agent)).toBe(expected);
    });
  }

  test("sound on random rules: when it says yes, every sampled name below is visible", () => {
    const random = prngBelow(12345);
    // Non-ASCII letters whose case folding differs from lower-casing (ſ ~ s, ς ~ σ, İ), and an emoji (two UTF-16
    // units, one code point).
    const levels = ["a", "b", "ab", "x", "s", "S", "ſ", "σ", "ς", "Σ", "İ", "i", "📁"];
    const globLevels = ["a", "b", "ab", "x", "*", "a*", "?", "**", "s*", "ſ*", "ς", "σ", "Σ*", "İ", "İ*", "??", "📁"];
    const pick = <T>(list: readonly T[]) => list[random(list.length)]!;
    const glob = () => {
      const n = 1 + random(3);
      const parts = Array.from({ length: n }, () => pick(globLevels));
      return parts.join("/");
    };
    const name = (n: number) => Array.from({ length: n }, () => pick(levels)).join("/");
    let yes = 0;
    for (let round = 0; round < 3000; round++) {
      const rules: RuleSpec[] = Array.from({ length: 1 + random(4) }, (_, i) => ({
        name: `r${i}`,
        action: random(2) === 0 ? ("allow" as const) : ("deny" as const),
        ...(random(5) === 0 ? {} : { folders: Array.from({ length: 1 + random(2) }, glob) }),
        ...(random(4) === 0 ? { operations: ["mail:delete"] } : {}),
      }));
      const policy = compilePolicy(rules);
      const folder = name(1 + random(2));
      if (!policy.subtreeVisible(folder, null)) continue;
      yes++;
      for (let depth = 1; depth <= 3; depth++) {
        for (let k = 0; k < 20; k++) {
          const below = `${folder}/${name(depth)}`;
          expect({ rules, folder, below, visible: policy.folderVisible(below, null) }).toEqual({
            rules,
            folder,
            below,
            visible: true,
          });
        }
      }
    }
    // The sample must exercise the yes branch, or the check above proves nothing.
    expect(yes).toBeGreaterThan(200);
  });
});

describe("globs with non-ASCII letters", () => {
  test("a deny rule with a wildcard matches the names it spells, whatever lower-casing does to them (İ → i̇)", () => {
    const p = compilePolicy([
      { name: "hide", folders: ["İ*", "Ω/*"], action: "deny" },
      { name: "rest", action: "allow" },
    ]);
    expect(p.folderVisible("İstanbul", null)).toBe(false);
    expect(p.folderVisible("İ", null)).toBe(false);
    expect(p.folderVisible("ω/Σ", null)).toBe(false);
    expect(p.folderVisible("Other", null)).toBe(true);
    const s = compilePolicy([
      { name: "hide", subject: ["*İstanbul*"], action: "deny" },
      { name: "rest", action: "allow" },
    ]);
    expect(s.evaluate({ operation: "mail:read", folder: "INBOX", subject: "Trip to İstanbul" }).action).toBe("deny");
    const a = compilePolicy([
      { name: "hide", from: ["İ*@x.test"], action: "deny" },
      { name: "rest", action: "allow" },
    ]);
    expect(a.evaluate({ operation: "mail:read", folder: "INBOX", from: ["İlker@x.test"] }).action).toBe("deny");
  });
});
