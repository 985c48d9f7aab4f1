/**
 * Case-insensitive globs (docs/config.md "Globs"): a glob made only of `*` and text, one with `?`, and a plain name
 * must treat the same characters as equal, through the policy engine, since a deny rule has to match every case
 * variant the docs promise.
 */
import { describe, expect, test } from "bun:test";
import { compilePolicy, type Request } from "../../src/policy/index.ts";

const denied = (subjectGlob: string, subject: string): boolean => {
  const policy = compilePolicy([
    { name: "no secrets", action: "deny", subject: [subjectGlob] },
    { name: "rest", action: "allow" },
  ]);
  const req: Request = { operation: "mail:read", folder: "INBOX", from: ["a@b.test"], subject };
  return policy.evaluate(req).rule === "no secrets";
};

const fromAllowed = (addressGlob: string, from: string): boolean => {
  const policy = compilePolicy([{ name: "ok", action: "allow", from: [addressGlob] }]);
  return policy.evaluate({ operation: "mail:read", folder: "INBOX", from: [from], subject: "x" }).action === "allow";
};

describe("subject globs: `*` only, with `?`, and without wildcards agree", () => {
  // Each glob names "secret"; the first two take the fast path (no `?`), the others a regular expression.
  const globs = ["*secret*", "secret", "*secre?*", "?ecret", "s?cret"];
  const same = ["secret", "SECRET", "ſecret", "ſEcret", "SECRET".replace("S", "ſ")];
  for (const g of globs) {
    for (const s of same)
      test(`deny ${JSON.stringify(g)} matches ${JSON.stringify(s)}`, () => expect(denied(g, s)).toBe(true));
  }
  test("Kelvin sign, micro sign and final sigma equal k, μ and σ on every path", () => {
    for (const g of ["*kelvin*", "kelvin", "?elvin"]) expect(denied(g, "\u212Aelvin")).toBe(true);
    for (const g of ["*μm*", "μm", "μ?"]) expect(denied(g, "\u00B5m")).toBe(true);
    for (const g of ["*λόγος*", "λόγος", "λόγο?"]) expect(denied(g, "ΛΌΓΟς")).toBe(true);
    for (const g of ["*λόγος*", "λόγος", "λόγο?"]) expect(denied(g, "λόγοσ")).toBe(true);
    for (const g of ["*ſtop*", "ſtop", "ſto?"]) expect(denied(g, "STOP")).toBe(true);
  });
  test("ẞ equals ß but neither equals ss; dotless ı is not i; İ is i with a dot above", () => {
    for (const g of ["*straße*", "straße", "stra?e"]) expect(denied(g, "STRAẞE")).toBe(true);
    for (const g of ["*straße*", "straße", "stra?e"]) expect(denied(g, "strasse")).toBe(false);
    for (const g of ["*admin*", "admin", "a?min"]) expect(denied(g, "adm\u0131n")).toBe(false);
    for (const g of ["*admin*", "admin", "a?min"]) expect(denied(g, "ADMIN")).toBe(true);
    for (const g of ["İ*", "İstanbul", "İs?anbul"]) expect(denied(g, "İSTANBUL")).toBe(true);
    for (const g of ["İ*", "İstanbul"]) expect(denied(g, "istanbul")).toBe(false);
  });
});

describe("address globs", () => {
  test("an allow rule's `*` glob and its `?` glob decide ſ alike", () => {
    expect(fromAllowed("*@sales.test", "a@ſales.test")).toBe(fromAllowed("?@sales.tes?", "a@ſales.test"));
    expect(fromAllowed("*@sales.test", "a@ſales.test")).toBe(true);
    expect(fromAllowed("*@bigclient.test", "a@b\u0131gclient.test")).toBe(false);
    expect(fromAllowed("?@bigclient.tes?", "a@b\u0131gclient.test")).toBe(false);
  });
});

describe("folder globs", () => {
  test("a plain name, a `/**` prefix and a `*` glob agree on ſ", () => {
    const policy = (folders: string[]) =>
      compilePolicy([
        { name: "hide", action: "deny", folders },
        { name: "rest", action: "allow" },
      ]);
    for (const f of [["Secret"], ["Secret/**"], ["Secre*"], ["Secre*/**"]]) {
      const folder = f[0]!.endsWith("/**") ? "ſecret/x" : "ſecret";
      expect(policy(f).evaluate({ operation: "mail:read", folder }).rule).toBe("hide");
    }
  });
});
