// [accounts.NAME] with auth = "oauth2" and [state] (docs/config.md, docs/accounts.md).
import { describe, expect, test } from "bun:test";
import * as oauth from "oauth4webapi";
import { endpointFor } from "../../src/accounts/oauth.ts";
import { ConfigError, type OAuth2AccountConfig, type OAuth2Settings, parseConfig } from "../../src/config/index.ts";

const FILE = "/cfg/mailgator.toml";

function account(lines: string[], env: Record<string, string> = {}): OAuth2AccountConfig {
  const c = parseConfig(["[accounts.a]", 'username = "me@x.test"', ...lines].join("\n"), FILE, { env });
  return c.accounts["a"] as OAuth2AccountConfig;
}

function problems(lines: string[]): string {
  try {
    parseConfig(["[accounts.a]", 'username = "me@x.test"', ...lines].join("\n"), FILE);
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return (e as ConfigError).message;
  }
  throw new Error("expected a ConfigError");
}

describe("oauth2 accounts", () => {
  test("google preset: endpoints, scope, public client", () => {
    const a = account(['auth = "oauth2"', 'provider = "google"', 'client_id = "id"']);
    expect(a.oauth2).toMatchObject({
      provider: "google",
      grant: "authorization_code",
      clientId: "id",
      clientSecret: null,
      tenant: null,
      authorizeUrl: "https://accounts.google.com/o/oauth2/v2/auth",
      tokenUrl: "https://oauth2.googleapis.com/token",
      deviceUrl: "https://oauth2.googleapis.com/device/code",
      scopes: ["https://mail.google.com/"],
    });
  });

  test("microsoft preset: tenant common by default, delegated scopes with offline_access", () => {
    const a = account(['auth = "oauth2"', 'provider = "microsoft"', 'client_id = "id"']);
    expect(a.oauth2.tenant).toBe("common");
    expect(a.oauth2.authorizeUrl).toBe("https://login.microsoftonline.com/common/oauth2/v2.0/authorize");
    expect(a.oauth2.tokenUrl).toBe("https://login.microsoftonline.com/common/oauth2/v2.0/token");
    expect(a.oauth2.deviceUrl).toBe("https://login.microsoftonline.com/common/oauth2/v2.0/devicecode");
    expect(a.oauth2.scopes).toEqual([
      "https://outlook.office.com/IMAP.AccessAsUser.All",
      "https://outlook.office.com/SMTP.Send",
      "offline_access",
    ]);
  });

  test("microsoft app-only: a real tenant and the secret are required; .default scope", () => {
    const a = account(
      ['auth = "oauth2"', 'provider = "microsoft"', 'grant = "client_credentials"', 'tenant = "contoso.com"'].concat([
        'client_id = "id"',
        'client_secret_env = "S"',
      ]),
      { S: "app-secret" },
    );
    expect(a.oauth2.tokenUrl).toBe("https://login.microsoftonline.com/contoso.com/oauth2/v2.0/token");
    expect(a.oauth2.scopes).toEqual(["https://outlook.office365.com/.default"]);
    expect(a.oauth2.clientSecret!.reveal()).toBe("app-secret");
    expect(JSON.stringify(a)).not.toContain("app-secret");
    const noTenant = ['auth = "oauth2"', 'provider = "microsoft"', 'grant = "client_credentials"', 'client_id = "i"'];
    expect(problems([...noTenant, 'client_secret = "s"'])).toContain("needs tenant = your directory's id or domain");
    expect(problems([...noTenant, 'client_secret = "s"', 'tenant = "common"'])).toMatch(
      /mailgator\.toml:8:10: accounts\.a\.tenant/,
    );
    expect(problems(noTenant)).toContain("needs the app's secret");
  });

  test("custom: its own endpoints and scopes; http only on loopback", () => {
    const base = ['auth = "oauth2"', 'provider = "custom"', 'client_id = "id"', 'scopes = ["mail"]'];
    const a = account([...base, 'authorize_url = "https://as.test/auth"', 'token_url = "http://127.0.0.1:9/token"']);
    expect(a.oauth2).toMatchObject({ tokenUrl: "http://127.0.0.1:9/token", deviceUrl: null, scopes: ["mail"] });
    const insecure = problems([...base, 'authorize_url = "https://as.test/a"', 'token_url = "http://as.test/token"']);
    expect(insecure).toMatch(/mailgator\.toml:8:13: accounts\.a\.token_url: expected an https:\/\/ URL/);
    expect(problems([...base, 'token_url = "https://as.test/t"'])).toContain("needs authorize_url");
    expect(
      problems(['auth = "oauth2"', 'provider = "custom"', 'client_id = "id"', 'token_url = "https://t.test"']),
    ).toContain("needs scopes");
  });

  test("custom: http:// only to a loopback literal or localhost, not to a name that starts like one", () => {
    const base = ['auth = "oauth2"', 'provider = "custom"', 'client_id = "id"', 'scopes = ["mail"]'];
    const auth = 'authorize_url = "https://as.test/auth"';
    for (const url of [
      "http://127.attacker.example/token",
      "http://127.0.0.1.nip.io/token",
      "http://localhost.attacker.example/token",
      "http://[::ffff:127.0.0.1]/token",
    ])
      expect(problems([...base, auth, `token_url = "${url}"`])).toContain(
        `accounts.a.token_url: expected an https:// URL (http:// only on a loopback address), got "${url}"`,
      );
    for (const url of [
      "http://127.0.0.1:9/token",
      "http://127.5.6.7/token",
      "http://[::1]:9/token",
      "http://localhost:9/token",
    ])
      expect(account([...base, auth, `token_url = "${url}"`]).oauth2.tokenUrl).toBe(url);
  });

  test("the token endpoint allows plain http only for a loopback URL", () => {
    const settings = (tokenUrl: string): OAuth2Settings => ({
      provider: "custom",
      grant: "authorization_code",
      clientId: "id",
      clientSecret: null,
      tenant: null,
      authorizeUrl: "https://as.test/auth",
      tokenUrl,
      deviceUrl: null,
      scopes: ["mail"],
      saslMechanism: "auto",
    });
    const insecure = (url: string) => endpointFor(settings(url)).options[oauth.allowInsecureRequests] === true;
    expect(insecure("http://127.attacker.example/token")).toBe(false);
    expect(insecure("http://127.0.0.1.nip.io/token")).toBe(false);
    expect(insecure("http://127.0.0.1:9/token")).toBe(true);
    expect(insecure("http://[::1]:9/token")).toBe(true);
    expect(insecure("http://localhost:9/token")).toBe(true);
    expect(insecure("https://as.test/token")).toBe(false);
  });

  test("keys of the other auth are refused where they stand", () => {
    expect(problems(['password = "pw"', 'client_id = "x"'])).toMatch(
      /:4:13: accounts\.a\.client_id: only for auth = "oauth2"/,
    );
    expect(problems(['auth = "oauth2"', 'provider = "google"', 'client_id = "x"', 'password = "pw"'])).toMatch(
      /:6:12: accounts\.a\.password: not used with auth = "oauth2"/,
    );
    expect(problems(['auth = "oauth2"', 'provider = "google"', 'client_id = "x"', 'scopes = ["a"]'])).toContain(
      'only for provider = "custom"',
    );
    expect(problems(['auth = "oauth2"', 'provider = "google"', 'client_id = "x"', 'tenant = "t"'])).toContain(
      'only for provider = "microsoft"',
    );
    expect(
      problems([
        'auth = "oauth2"',
        'provider = "google"',
        'grant = "client_credentials"',
        'client_id = "x"',
        'client_secret = "s"',
      ]),
    ).toContain("Google has no app-only IMAP");
    expect(
      problems([
        'auth = "oauth2"',
        'provider = "google"',
        'client_id = "x"',
        'client_secret = "s"',
        'client_secret_file = "f"',
      ]),
    ).toContain("give at most one of");
  });

  test("unknown keys and values are errors with their place", () => {
    expect(problems(['auth = "oauth2"', 'provider = "gmail"'])).toMatch(/:4:\d+: accounts\.a\.provider: expected/);
    expect(problems(['auth = "token"'])).toMatch(/:3:\d+: accounts\.a\.auth: expected/);
    expect(problems(['auth = "oauth2"', 'provider = "google"', 'client_id = "x"', 'refresh_token = "r"'])).toMatch(
      /accounts\.a\.refresh_token: unknown key/,
    );
    expect(problems(['auth = "oauth2"'])).toContain("needs provider");
  });

  test("[state]: defaults beside the audit log and the config; keys relative to the config", () => {
    const c = parseConfig('[audit]\npath = "/var/lib/mg/audit.db"\n', FILE);
    expect(c.state).toEqual({ path: "/var/lib/mg/mailgator-state.db", secretsFile: "/cfg/mailgator-secrets.key" });
    const d = parseConfig('[state]\npath = "s/state.db"\nsecrets_file = "/etc/mg/key"\n', FILE);
    expect(d.state).toEqual({ path: "/cfg/s/state.db", secretsFile: "/etc/mg/key" });
    expect(() => parseConfig('[state]\nkey = "x"\n', FILE)).toThrow(/state\.key: unknown key/);
  });
});
