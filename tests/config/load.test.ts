import { describe, expect, test } from "bun:test";
import { chmodSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { AccountCredentials } from "../../src/accounts/credentials.ts";
import {
  type AccountConfig,
  ConfigError,
  loadConfig,
  ownEntry,
  parseConfig,
  type Secret,
} from "../../src/config/index.ts";
import { ENV_NAME_MAX } from "../../src/config/secret-keys.ts";
import { loadIdentity } from "../../src/net/listener.ts";
import { MAX_TLS_FILE_BYTES, readTlsFile } from "../../src/net/tls-file.ts";
import { readCaFile } from "../../src/net/upstream.ts";
import { SECRET_FILE_MAX_BYTES } from "../../src/runtime/secret-file.ts";
import { upstreams } from "../fixtures/index.ts";
import { tempRoot } from "../fixtures/temp.ts";

/** Every folder this file makes is in here, removed after its tests. */
const TMP = tempRoot("mg-cfg-");

const HASH = `sha256:${"a".repeat(64)}`;
const IMAP = `[imap]\nlisten_addr = "127.0.0.1:1993"\nupstream_addr = "imap.example.test:993"\n`;

function passwordOf(account: AccountConfig | undefined): Secret {
  if (account?.auth !== "password") throw new Error("expected a password account");
  return account.password;
}

function problems(text: string, env: Record<string, string> = {}): string {
  try {
    parseConfig(text, "/cfg/mailgator.toml", { env });
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return (e as ConfigError).message;
  }
  throw new Error("expected a ConfigError");
}

describe("loading", () => {
  test("the seed config loads verbatim with the defaults of docs/config.md", () => {
    const c = loadConfig(join(import.meta.dir, "../../examples/seed.toml"));
    expect(c.imap?.upstreamTls).toBe("tls");
    expect(c.smtp?.upstreamTls).toBe("starttls");
    expect(c.imap?.listenTls).toBe("none");
    expect(c.rules.map((r) => r.name)).toEqual(["Transactional emails from known senders", "Deny everything else"]);
    expect(c.rules[0]!.operations).toEqual(["folder:read", "mail:read"]);
    expect(c.rules[0]!.folders).toEqual(["INBOX"]);
    expect(c.rules[0]!.from).toEqual(["notifications@*"]);
    expect(c.audit.path.endsWith("examples/mailgator-audit.db")).toBe(true);
    expect(c.agents).toEqual([]);
    expect(c.revision).toMatch(/^[0-9a-f]{16}$/);
    expect(Object.isFrozen(c)).toBe(true);
    expect(Object.isFrozen(c.rules[0])).toBe(true);
  });

  test("aliases folder and operation", () => {
    const c = parseConfig(
      `[[rules]]\nname = "a"\nfolder = "Drafts"\noperation = "mail:append"\naction = "allow"\n`,
      "/x.toml",
    );
    expect(c.rules[0]!.folders).toEqual(["Drafts"]);
    expect(c.rules[0]!.operations).toEqual(["mail:append"]);
  });

  test("a secret from the environment never prints", () => {
    const c = parseConfig(
      `${IMAP}[accounts.main]\nusername = "me@x.test"\npassword_env = "PW"\n[[agents]]\nname = ` +
        `"bot"\ntoken_hash = "${HASH}"\naccount = "main"\n`,
      "/x.toml",
      { env: { PW: "hunter2-secret" } },
    );
    expect(passwordOf(c.accounts["main"]).reveal()).toBe("hunter2-secret");
    expect(JSON.stringify(c)).not.toContain("hunter2");
    expect(String(passwordOf(c.accounts["main"]))).toBe("[redacted]");
    expect(Bun.inspect(c)).not.toContain("hunter2");
  });

  test("a password file is read relative to the config", () => {
    const dir = mkdtempSync(join(TMP, "mg-cfg-"));
    writeFileSync(join(dir, "pw.txt"), "from-file\n", { mode: 0o600 });
    writeFileSync(
      join(dir, "m.toml"),
      `[accounts.main]\nusername = "u"\npassword_file = "pw.txt"\n[[agents]]\nname = "b"\ntoken_hash = ` +
        `"${HASH}"\naccount = "main"\n`,
    );
    expect(passwordOf(loadConfig(join(dir, "m.toml")).accounts["main"]).reveal()).toBe("from-file");
  });

  describe("a password file must be a small, private, regular file holding a password", () => {
    const account = (file: string) =>
      `[accounts.main]\nusername = "u"\npassword_file = ${JSON.stringify(file)}\n[[agents]]\nname = "b"\n` +
      `token_hash = "${HASH}"\naccount = "main"\n`;
    const refusal = (file: string): string => {
      try {
        parseConfig(account(file), "/cfg/mailgator.toml");
      } catch (e) {
        expect(e).toBeInstanceOf(ConfigError);
        return (e as ConfigError).message;
      }
      throw new Error("expected a ConfigError");
    };

    test("/dev/zero and a FIFO are refused at once, never read", () => {
      expect(refusal("/dev/zero")).toContain(`accounts.main.password_file: "/dev/zero" is not a regular file`);
      const dir = mkdtempSync(join(TMP, "mg-cfg-"));
      const fifo = join(dir, "pw.fifo");
      expect(Bun.spawnSync(["mkfifo", "-m", "600", fifo]).exitCode).toBe(0);
      // No writer ever opens the FIFO: reading it would wait for ever (the test's timeout would fail it).
      expect(refusal(fifo)).toContain(`${JSON.stringify(fifo)} is not a regular file`);
      expect(refusal(dir)).toContain("is not a regular file");
    }, 5000);

    test("a file larger than SECRET_FILE_MAX_BYTES is refused; one at the limit is read", () => {
      const dir = mkdtempSync(join(TMP, "mg-cfg-"));
      const big = join(dir, "big.txt");
      writeFileSync(big, "x".repeat(SECRET_FILE_MAX_BYTES + 1), { mode: 0o600 });
      expect(refusal(big)).toContain(`is larger than ${SECRET_FILE_MAX_BYTES} bytes`);
      writeFileSync(big, "x".repeat(SECRET_FILE_MAX_BYTES), { mode: 0o600 });
      const c = parseConfig(account(big), "/x.toml");
      expect(passwordOf(c.accounts["main"]).reveal()).toHaveLength(SECRET_FILE_MAX_BYTES);
    });

    test("an empty or blank file is refused; one trailing line ending is dropped, nothing else", () => {
      const dir = mkdtempSync(join(TMP, "mg-cfg-"));
      const file = join(dir, "pw.txt");
      for (const text of ["", "\n", "\r\n", "  \n", "\t"]) {
        writeFileSync(file, text, { mode: 0o600 });
        expect(refusal(file)).toContain(`${JSON.stringify(file)} is empty (or only white space)`);
      }
      for (const [text, password] of [
        ["pw\n", "pw"],
        ["pw\r\n", "pw"],
        ["pw", "pw"],
        [" pw \n\n", " pw \n"],
      ] as const) {
        writeFileSync(file, text, { mode: 0o600 });
        expect(passwordOf(parseConfig(account(file), "/x.toml").accounts["main"]).reveal()).toBe(password);
      }
    });

    test("a file readable by group or others is refused, naming its mode", () => {
      const dir = mkdtempSync(join(TMP, "mg-cfg-"));
      const file = join(dir, "pw.txt");
      writeFileSync(file, "pw\n", { mode: 0o600 });
      for (const mode of [0o644, 0o640, 0o604]) {
        chmodSync(file, mode);
        expect(refusal(file)).toContain(
          `${JSON.stringify(file)} is readable by group or others (mode ${mode.toString(8)}): chmod 600 it`,
        );
      }
      chmodSync(file, 0o400);
      expect(passwordOf(parseConfig(account(file), "/x.toml").accounts["main"]).reveal()).toBe("pw");
    });

    test("an empty password, password_env holding only white space, and an empty username are refused", () => {
      const base = `[accounts.m]\nusername = "u"\n`;
      expect(problems(`${base}password = ""\n`)).toContain("accounts.m.password: is empty (or only white space)");
      expect(problems(`${base}password = "   "\n`)).toContain("accounts.m.password: is empty (or only white space)");
      expect(problems(`${base}password_env = "PW"\n`, { PW: " \t" })).toContain(
        "accounts.m.password_env: environment variable PW holds only white space",
      );
      expect(problems(`[accounts.m]\nusername = ""\npassword = "p"\n`)).toContain(
        'accounts.m.username: expected a non-empty string, got ""',
      );
      expect(
        problems(
          [
            '[accounts.a]\nusername = "me@x.test"\nauth = "oauth2"\nprovider = "google"',
            'client_id = "id"',
            'client_secret = ""',
          ].join("\n"),
        ),
      ).toContain("accounts.a.client_secret: is empty (or only white space)");
    });
  });

  test("identities: [smtp] and per account, as written; [smtp] identities in vault mode only warn", () => {
    const smtp =
      `[smtp]\nlisten_addr = "127.0.0.1:1"\nupstream_addr = "h:587"\n` +
      `identities = ["Me@Corp.test", "sales@corp.test"]\n`;
    const pass = parseConfig(smtp, "/x.toml");
    expect(pass.smtp?.identities).toEqual(["Me@Corp.test", "sales@corp.test"]);
    expect(pass.warnings.join("\n")).not.toContain("identities");
    expect(
      parseConfig(`[smtp]\nlisten_addr = "127.0.0.1:1"\nupstream_addr = "h:587"\n`, "/x.toml").smtp?.identities,
    ).toEqual([]);
    const vault = parseConfig(
      `${smtp}[accounts.main]\nusername = "me@corp.test"\npassword = "p"\nidentities = ` +
        `["me.alias@corp.test"]\n[accounts.other]\nusername = "o"\npassword = "p"\n` +
        `[[agents]]\nname = "bot"\ntoken_hash = "${HASH}"\naccount = "main"\n`,
      "/x.toml",
    );
    expect(vault.accounts["main"]!.identities).toEqual(["me.alias@corp.test"]);
    expect(vault.accounts["other"]!.identities).toEqual([]);
    expect(vault.warnings.join("\n")).toContain("[smtp] identities apply in pass-through mode only");
  });

  test("ask in pass-through mode with notify_account loads; that account draws no 'ignored' warning", () => {
    const text =
      `[approvals]\nnotify_account = "notices"\n[approvals.groups.m]\nrecipients = ["boss@example.com"]\n` +
      `[accounts.notices]\nusername = "notices@example.com"\npassword = "p"\n` +
      `[[rules]]\nname = "hold"\naction = "ask"\nask_groups = ["m"]\noperations = ["send"]\n`;
    const c = parseConfig(text, "/cfg/mailgator.toml");
    expect(c.approvals.notifyAccount).toBe("notices");
    expect(c.approvals.notifySender).toBe(false);
    expect(c.agents).toEqual([]);
    expect(c.warnings.join("\n")).not.toContain("pass-through mode ignores them");
    const other = parseConfig(`${text}[accounts.extra]\nusername = "x@example.com"\npassword = "p"\n`, "/cfg/m.toml");
    expect(other.warnings.join("\n")).toContain("pass-through mode ignores them");
  });

  test("ask in pass-through mode without notify_account loads, with a warning: no notice will be sent", () => {
    const c = parseConfig(
      `[approvals.groups.m]\nrecipients = ["boss@example.com"]\n` +
        `[[rules]]\nname = "hold"\naction = "ask"\nask_groups = ["m"]\noperations = ["send"]\n`,
      "/cfg/mailgator.toml",
    );
    expect(c.approvals.notifyAccount).toBeNull();
    expect(c.warnings.join("\n")).toContain(
      "[approvals] notify_account is not set: in pass-through mode no notice is sent to approvers",
    );
  });

  test("ask in vault mode: a warning when notices go as an agent's own account", () => {
    const vault = (notify: string) =>
      parseConfig(
        `[approvals]\n${notify}[approvals.groups.m]\nrecipients = ["boss@example.com"]\n` +
          `[accounts.main]\nusername = "bot@example.com"\npassword = "p"\n` +
          `[accounts.notices]\nusername = "notices@example.com"\npassword = "p"\n` +
          `[[agents]]\nname = "bot"\ntoken_hash = "${HASH}"\naccount = "main"\n` +
          `[[rules]]\nname = "hold"\naction = "ask"\nask_groups = ["m"]\noperations = ["send"]\n`,
        "/cfg/mailgator.toml",
      ).warnings.join("\n");
    expect(vault("")).toContain("[approvals] notify_account is not set");
    expect(vault(`notify_account = "main"\n`)).toContain(`notify_account "main" is agent "bot"'s account`);
    expect(vault(`notify_account = "notices"\n`)).not.toContain("notify_account");
    // Another entry for the agent's own mailbox.
    const twin = parseConfig(
      `[approvals]\nnotify_account = "twin"\n[approvals.groups.m]\nrecipients = ["boss@example.com"]\n` +
        `[accounts.main]\nusername = "bot@example.com"\npassword = "p"\n` +
        `[accounts.twin]\nusername = "Bot+notices@example.com"\npassword = "p"\n` +
        `[[agents]]\nname = "bot"\ntoken_hash = "${HASH}"\naccount = "main"\n` +
        `[[rules]]\nname = "hold"\naction = "ask"\nask_groups = ["m"]\noperations = ["send"]\n`,
      "/cfg/mailgator.toml",
    ).warnings.join("\n");
    expect(twin).toContain(`notify_account "twin" is agent "bot"'s account`);
  });

  test("ask in vault mode: a warning when an approver's address is an agent's mailbox (the link lands there)", () => {
    const vault = (recipient: string) =>
      parseConfig(
        `[approvals]\nnotify_account = "notices"\n[approvals.groups.m]\nrecipients = ["${recipient}"]\n` +
          `[accounts.main]\nusername = "bot@example.com"\npassword = "p"\nidentities = ["desk@example.com"]\n` +
          `[accounts.notices]\nusername = "notices@example.com"\npassword = "p"\n` +
          `[[agents]]\nname = "bot"\ntoken_hash = "${HASH}"\naccount = "main"\n` +
          `[[rules]]\nname = "hold"\naction = "ask"\nask_groups = ["m"]\noperations = ["send"]\n`,
        "/cfg/mailgator.toml",
      ).warnings.join("\n");
    const warning = `is the mailbox of agent "bot"'s account "main", which that agent can read: its notices carry no`;
    expect(vault("Bot@Example.com")).toContain(`[approvals.groups.m] Bot@Example.com ${warning}`);
    expect(vault("desk@example.com")).toContain(warning);
    expect(vault("boss@example.com")).not.toContain("is the mailbox of agent");
    // The notices account is no agent's: its address as an approver draws no warning.
    expect(vault("notices@example.com")).not.toContain("is the mailbox of agent");
  });

  test("warnings for skip-verify, upstream none and plaintext on a public address", () => {
    const c = parseConfig(
      `[imap]\nlisten_addr = "0.0.0.0:1993"\nupstream_addr = "h:993"\nupstream_tls_skip_verify = ` +
        `true\n[smtp]\nlisten_addr = "127.0.0.1:1"\nupstream_addr = "h:2525"\nupstream_tls = "none"\n`,
      "/x.toml",
    );
    expect(c.warnings.join("\n")).toContain("NOT verified");
    expect(c.warnings.join("\n")).toContain("unencrypted");
    expect(c.warnings.join("\n")).toContain("clear text");
  });
});

describe("what a rule may say", () => {
  test("message conditions on reading and sending load with [imap]; on any operation without it", () => {
    const read = `[[rules]]\nname = "r"\nfrom = "a@*"\naction = "allow"\noperations = ["read", "send"]\n`;
    expect(parseConfig(`${IMAP}${read}`, "/x.toml").rules[0]!.operations).toEqual([
      "folder:read",
      "mail:read",
      "mail:send",
    ]);
    const smtpOnly =
      `[smtp]\nlisten_addr = "127.0.0.1:1"\nupstream_addr = "h:587"\n` +
      `[[rules]]\nname = "b"\nbcc = "*"\naction = "deny"\n`;
    expect(parseConfig(smtpOnly, "/x.toml").rules[0]!.bcc).toEqual(["*"]);
    expect(problems(`${IMAP}${smtpOnly.slice(smtpOnly.indexOf("[[rules]]"))}`)).toContain("rules[0].bcc");
  });

  test("a listener's certificate and key must be a PEM certificate and its own key", () => {
    const tls = join(upstreams().caFile, "..");
    const dir = mkdtempSync(join(TMP, "mg-cfg-"));
    writeFileSync(join(dir, "garbage.pem"), "not a certificate\n");
    const listener = (cert: string, key: string) =>
      `[imap]\nlisten_addr = "127.0.0.1:1"\nupstream_addr = "h:993"\nlisten_tls = "tls"\n` +
      `tls_cert_file = "${cert}"\ntls_key_file = "${key}"\n`;
    const good = parseConfig(listener(join(tls, "server.pem"), join(tls, "server.key")), join(dir, "m.toml"));
    expect(good.imap?.tlsCertFile).toBe(join(tls, "server.pem"));
    const garbage = problems(listener(join(dir, "garbage.pem"), join(tls, "server.key")));
    expect(garbage).toContain("mailgator.toml:5:17: imap.tls_cert_file:");
    expect(garbage).toContain("are not a PEM certificate and its private key");
    const mismatch = problems(listener(join(tls, "ca.pem"), join(tls, "server.key")));
    expect(mismatch).toContain("imap.tls_cert_file:");
    expect(mismatch).toMatch(/KEY_VALUES_MISMATCH|key values mismatch/i);
    expect(mismatch).not.toContain("PRIVATE KEY");
  });

  test("a listener's key file readable by every user is refused; readable by its group is taken", () => {
    const tls = join(upstreams().caFile, "..");
    const dir = mkdtempSync(join(TMP, "mg-cfg-"));
    const key = join(dir, "server.key");
    const listener =
      `[imap]\nlisten_addr = "127.0.0.1:1"\nupstream_addr = "h:993"\nlisten_tls = "tls"\n` +
      `tls_cert_file = "${join(tls, "server.pem")}"\ntls_key_file = "${key}"\n`;
    writeFileSync(key, readFileSync(join(tls, "server.key")));
    for (const mode of [0o600, 0o640, 0o660]) {
      chmodSync(key, mode);
      expect(parseConfig(listener, join(dir, "m.toml")).imap?.tlsKeyFile).toBe(key);
    }
    for (const mode of [0o604, 0o644, 0o666]) {
      chmodSync(key, mode);
      const found = problems(listener);
      expect(found).toContain("imap.tls_key_file:");
      expect(found).toContain(`is readable by every user (mode ${mode.toString(8)}): chmod o-r it`);
    }
    // The proxies read it the same way, at start and at a reload (src/runtime/reload.ts).
    expect(() => loadIdentity(join(tls, "server.pem"), key)).toThrow("is readable by every user");
    chmodSync(key, 0o640);
    expect(loadIdentity(join(tls, "server.pem"), key).key.length).toBeGreaterThan(0);
  });

  test("skipSecrets: a listener's private key is not read (a missing or bad key loads; the cert is checked)", () => {
    const tls = join(upstreams().caFile, "..");
    const dir = mkdtempSync(join(TMP, "mg-cfg-"));
    writeFileSync(join(dir, "garbage.key"), "not a key\n");
    const listener = (cert: string, key: string) =>
      `[imap]\nlisten_addr = "127.0.0.1:1"\nupstream_addr = "h:993"\nlisten_tls = "tls"\n` +
      `tls_cert_file = "${cert}"\ntls_key_file = "${key}"\n`;
    const cert = join(tls, "server.pem");
    for (const key of [join(dir, "garbage.key"), join(dir, "missing.key")]) {
      expect(problems(listener(cert, key))).toContain("imap.tls");
      const c = parseConfig(listener(cert, key), join(dir, "m.toml"), { skipSecrets: true });
      expect(c.imap?.tlsCertFile).toBe(cert);
    }
    expect(problems(listener(join(dir, "garbage.key"), join(tls, "server.key")))).toContain("imap.tls_cert_file:");
  });

  test("an upstream CA file must hold a PEM certificate", () => {
    const dir = mkdtempSync(join(TMP, "mg-cfg-"));
    writeFileSync(join(dir, "garbage.pem"), "not a certificate\n");
    const imap = (ca: string) => `${IMAP}upstream_ca_file = "${ca}"\n`;
    expect(parseConfig(imap(upstreams().caFile), join(dir, "m.toml")).imap?.upstreamCaFile).toBe(upstreams().caFile);
    const garbage = problems(imap(join(dir, "garbage.pem")));
    expect(garbage).toContain(`mailgator.toml:4:20: imap.upstream_ca_file: "${join(dir, "garbage.pem")}" holds no PEM`);
  });

  test("a TLS file of MAX_TLS_FILE_BYTES is read; one byte more is refused, not read", () => {
    const dir = mkdtempSync(join(TMP, "mg-cfg-"));
    const ca = join(dir, "bundle.pem");
    // The test CA, then blank lines up to the size: OpenSSL reads the certificate and skips the rest.
    const pem = readFileSync(upstreams().caFile, "utf8");
    const imap = `${IMAP}upstream_ca_file = "${ca}"\n`;
    writeFileSync(ca, pem + "\n".repeat(MAX_TLS_FILE_BYTES - Buffer.byteLength(pem)));
    expect(readTlsFile(ca).length).toBe(MAX_TLS_FILE_BYTES);
    expect(parseConfig(imap, join(dir, "m.toml")).imap?.upstreamCaFile).toBe(ca);
    writeFileSync(ca, pem + "\n".repeat(MAX_TLS_FILE_BYTES + 1 - Buffer.byteLength(pem)));
    expect(() => readTlsFile(ca)).toThrow(`is larger than ${MAX_TLS_FILE_BYTES} bytes (MAX_TLS_FILE_BYTES)`);
    expect(problems(imap)).toContain(`imap.upstream_ca_file: "${ca}" is larger than ${MAX_TLS_FILE_BYTES} bytes`);
    expect(() => readCaFile(ca)).toThrow("is larger than");
  });

  test("a FIFO or a device as a TLS file is refused at once, never read", () => {
    const tls = join(upstreams().caFile, "..");
    const dir = mkdtempSync(join(TMP, "mg-cfg-"));
    const fifo = join(dir, "tls.fifo");
    expect(Bun.spawnSync(["mkfifo", "-m", "600", fifo]).exitCode).toBe(0);
    const key = join(dir, "server.key");
    writeFileSync(key, readFileSync(join(tls, "server.key")), { mode: 0o600 });
    const listener = (cert: string, k: string, ca: string) =>
      `[imap]\nlisten_addr = "127.0.0.1:1"\nupstream_addr = "h:993"\nlisten_tls = "tls"\n` +
      `tls_cert_file = "${cert}"\ntls_key_file = "${k}"\nupstream_ca_file = "${ca}"\n`;
    const cert = join(tls, "server.pem");
    const ca = upstreams().caFile;
    // No writer ever opens the FIFO: a read that waited for one would fail the test by its time limit.
    for (const odd of [fifo, "/dev/zero", dir]) {
      const kind = odd === fifo ? "(a pipe)" : odd === dir ? "(a folder)" : "(a character device)";
      expect(problems(listener(odd, key, ca))).toContain(
        `imap.tls_cert_file: the TLS certificate file ${odd} is not a regular file ${kind}`,
      );
      expect(problems(listener(cert, odd, ca))).toContain(
        `imap.tls_key_file: the TLS key file ${odd} is not a regular file ${kind}`,
      );
      expect(problems(listener(cert, key, odd))).toContain(
        `imap.upstream_ca_file: ${JSON.stringify(odd)} is not a regular file ${kind}`,
      );
      expect(() => loadIdentity(cert, odd)).toThrow(`is not a regular file ${kind}`);
      expect(() => readCaFile(odd)).toThrow(`is not a regular file ${kind}`);
    }
    // A regular file that reads other than its size (the kernel's /proc makes it up as it is read) is not read either.
    expect(() => readTlsFile("/proc/self/status")).toThrow("read more than 0 bytes where its size is 0");
  }, 5000);
});

describe("errors a person can act on", () => {
  const cases: [string, string, string[]][] = [
    [
      "TOML syntax error with line, column and caret",
      `a = 1\nb = = 2\n`,
      ["/cfg/mailgator.toml:2:5", "TOML syntax error", "^"],
    ],
    [
      "bad action names the path, expectation and value",
      `[[rules]]\nname = "a"\naction = "deny"\n[[rules]]\nname = "b"\naction = "alow"\n`,
      [`rules[1].action: expected "allow" | "deny" | "ask", got "alow"`, "mailgator.toml:6:"],
    ],
    [
      "unknown key in a rule",
      `[[rules]]\nname = "a"\naction = "deny"\nfrm = "x@y"\n`,
      [`rules[0].frm: unknown key "frm"`, ":4:"],
    ],
    ["unknown top-level table", `[imapp]\nx = 1\n`, [`imapp: unknown key "imapp"`]],
    ["missing action", `[[rules]]\nname = "a"\n`, [`rules[0].action: missing required key "action"`]],
    [
      "duplicate rule names",
      `[[rules]]\nname = "a"\naction = "deny"\n[[rules]]\nname = "a"\naction = "allow"\n`,
      [`rules[1].name: duplicate rule name "a"`],
    ],
    [
      "malformed folder glob",
      `[[rules]]\nname = "a"\naction = "allow"\nfolders = ["Archive//x"]\n`,
      [`rules[0].folders[0]: folder glob "Archive//x"`],
    ],
    [
      "malformed address glob",
      `[[rules]]\nname = "a"\naction = "allow"\nfrom = "boss"\n`,
      [`rules[0].from[0]: address glob "boss"`],
    ],
    [
      "address glob that is not ASCII (it could never match: addresses are ASCII, a domain as its A-label)",
      `[[rules]]\nname = "a"\naction = "deny"\nfrom = "*@bücher.test"\n`,
      [`rules[0].from[0]: address glob "*@bücher.test": addresses are matched in ASCII only`, "xn--"],
    ],
    [
      "address glob with a KELVIN SIGN (it would never match kate@corp.test either)",
      `[[rules]]\nname = "a"\naction = "deny"\nto = ["x@corp.test", "\u212Aate@corp.test"]\n`,
      [`rules[0].to[1]: address glob "\u212Aate@corp.test": addresses are matched in ASCII only`],
    ],
    [
      "unknown operation",
      `[[rules]]\nname = "a"\naction = "allow"\noperations = ["mail:raed"]\n`,
      [`rules[0].operations[0]: expected an operation`, `got "mail:raed"`],
    ],
    [
      "ask without ask_groups",
      `[[rules]]\nname = "a"\naction = "allow"\n[[rules]]\nname = "hold"\naction = "ask"\noperations = ["send"]\n`,
      [`mailgator.toml:6:10: rules[1].action: action "ask" needs ask_groups`],
    ],
    [
      "ask without operations (it would cover every operation)",
      `[approvals.groups.m]\nrecipients = ["boss@example.com"]\n[[rules]]\nname = "a"\naction = ` +
        `"ask"\nask_groups = ["m"]\n`,
      [`mailgator.toml:5:10: rules[0].action: action "ask" holds sends only`, "every operation"],
    ],
    [
      "ask on a read",
      `[approvals.groups.m]\nrecipients = ["boss@example.com"]\n[[rules]]\nname = "a"\naction = "ask"\n` +
        `ask_groups = ["m"]\noperations = ["read"]\n`,
      [`mailgator.toml:7:14: rules[0].operations: action "ask" holds sends only`],
    ],
    [
      "ask naming a group that does not exist",
      `[approvals.groups.m]\nrecipients = ["boss@example.com"]\n[[rules]]\nname = "a"\naction = "ask"\n` +
        `ask_groups = ["managers"]\noperations = ["send"]\n`,
      [`mailgator.toml:6:14: rules[0].ask_groups[0]: no group named "managers" in [approvals.groups]`],
    ],
    [
      "ask_groups on an allow rule",
      `[approvals.groups.m]\nrecipients = ["boss@example.com"]\n[[rules]]\nname = "a"\naction = "allow"\n` +
        `ask_groups = ["m"]\n`,
      [`mailgator.toml:6:14: rules[0].ask_groups: only for action = "ask"`],
    ],
    [
      "approvals timeout, base_url and group recipients malformed",
      `[approvals]\ntimeout = "1 day"\nbase_url = "ftp://x"\nnotify_account = "nope"\n` +
        `[approvals.groups.m]\nrecipients = ["boss"]\n`,
      [
        `mailgator.toml:2:11: approvals.timeout: expected a duration`,
        `mailgator.toml:3:12: approvals.base_url: expected an http:// or https:// URL`,
        `mailgator.toml:4:18: approvals.notify_account: no account named "nope"`,
        `mailgator.toml:6:14: approvals.groups.m.recipients[0]: expected an email address`,
      ],
    ],
    ...["https://host/?", "https://host/#", "https://host/?a=b", "https://user:secret@host/"].map(
      (url): [string, string, string[]] => [
        `approvals base_url ${url}`,
        `[approvals]\nbase_url = "${url}"\n`,
        [`mailgator.toml:2:12: approvals.base_url: expected an http:// or https:// URL without query, fragment or`],
      ],
    ),
    [
      "approvals timeout past 30 days",
      `[approvals]\ntimeout = "31d"\n`,
      [`mailgator.toml:2:11: approvals.timeout: expected a duration`, "at most 30d"],
    ],
    [
      "message conditions on an IMAP write, at the rule's operations",
      `${IMAP}[[rules]]\nname = "a"\nfolders = ["INBOX"]\naction = "allow"\n` +
        `[[rules]]\nname = "flag boss"\nfrom = "boss@*"\naction = "allow"\noperations = ["read", "mail:flag"]\n`,
      [
        `mailgator.toml:12:14: rules[1].operations: message conditions (from) apply only to reading`,
        "also covers mail:flag",
        "Limit the rule's operations to read and/or send, or remove those conditions",
      ],
    ],
    [
      "message conditions on an IMAP write, at the alias operation",
      `${IMAP}[[rules]]\nname = "a"\nsubject = "x*"\nhas_attachment = true\naction = "deny"\noperation = "write"\n`,
      [`mailgator.toml:9:13: rules[0].operation: message conditions (subject, has_attachment)`],
    ],
    [
      "message conditions without operations (all of them), at the first condition",
      `${IMAP}[[rules]]\nname = "a"\naction = "deny"\nbcc = "*"\n`,
      [`mailgator.toml:7:7: rules[0].bcc: message conditions (bcc)`, "every operation (operations is omitted)"],
    ],
    [
      "alias and key together",
      `[[rules]]\nname = "a"\naction = "allow"\nfolder = "A"\nfolders = ["B"]\n`,
      [`rules[0].folder: "folder" is an alias of "folders"`],
    ],
    [
      "empty list",
      `[[rules]]\nname = "a"\naction = "allow"\nto = []\n`,
      [`rules[0].to: an empty list matches nothing`],
    ],
    [
      "agent pointing at a missing account",
      `[[agents]]\nname = "bot"\ntoken_hash = "${HASH}"\naccount = "nope"\n`,
      [`agents[0].account: no account named "nope"`],
    ],
    [
      "bad token hash",
      `[accounts.m]\nusername = "u"\npassword = "p"\n[[agents]]\nname = "bot"\ntoken_hash = "abc"\naccount = "m"\n`,
      [`agents[0].token_hash: expected "sha256:"`],
    ],
    [
      "token hash in upper-case hex (as some tools print digests)",
      `[accounts.m]\nusername = "u"\npassword = "p"\n[[agents]]\nname = "bot"\n` +
        `token_hash = "sha256:${"AB".repeat(32)}"\naccount = "m"\n`,
      [`agents[0].token_hash: expected "sha256:" and 64 lowercase hex digits`],
    ],
    [
      "rule names an unknown agent",
      `[accounts.m]\nusername = "u"\npassword = "p"\n[[agents]]\nname = "bot"\ntoken_hash = "${HASH}"\naccount ` +
        `= "m"\n[[rules]]\nname = "a"\naction = "allow"\nagents = ["bott"]\n`,
      [`rules[0].agents[0]: no agent named "bott"`],
    ],
    [
      "rule names agents in pass-through mode",
      `[[rules]]\nname = "a"\naction = "allow"\nagents = ["x"]\n`,
      [`no [[agents]] are defined`],
    ],
    [
      "bad listen address",
      `[imap]\nlisten_addr = "localhost"\nupstream_addr = "h:993"\n`,
      [`imap.listen_addr: expected "host:port"`, ":2:"],
    ],
    [
      "non-standard port without upstream_tls",
      `[imap]\nlisten_addr = "127.0.0.1:1"\nupstream_addr = "h:3143"\n`,
      [`port 3143 is not a standard IMAP port; state upstream_tls`],
    ],
    [
      "cert without listen_tls",
      `[imap]\nlisten_addr = "127.0.0.1:1"\nupstream_addr = "h:993"\ntls_cert_file = "c.pem"\n`,
      [`imap.listen_tls: tls_cert_file/tls_key_file are set but listen_tls is "none"`],
    ],
    [
      "listen_tls without cert",
      `[imap]\nlisten_addr = "127.0.0.1:1"\nupstream_addr = "h:993"\nlisten_tls = "tls"\n`,
      [`imap.tls_cert_file: required when listen_tls = "tls"`],
    ],
    [
      "missing CA file",
      `[imap]\nlisten_addr = "127.0.0.1:1"\nupstream_addr = "h:993"\nupstream_ca_file = "nope.pem"\n`,
      [`imap.upstream_ca_file: file "/cfg/nope.pem" does not exist`],
    ],
    ["wrong type", `[audit]\nretention_days = "ten"\n`, [`audit.retention_days: expected number, got "ten"`]],
    [
      "identity that is not an address (account)",
      `[accounts.m]\nusername = "u"\npassword = "p"\nidentities = ["me@corp.test", "boss"]\n`,
      [`mailgator.toml:4:14: accounts.m.identities[1]: expected an email address (local@domain), got "boss"`],
    ],
    [
      "identity that is not an address ([smtp])",
      `[smtp]\nlisten_addr = "127.0.0.1:1"\nupstream_addr = "h:587"\nidentities = ["<me@corp.test>"]\n`,
      [`mailgator.toml:4:14: smtp.identities[0]: expected an email address (local@domain), got "<me@corp.test>"`],
    ],
    [
      "identity written as a glob",
      `[smtp]\nlisten_addr = "127.0.0.1:1"\nupstream_addr = "h:587"\nidentities = ["*@corp.test"]\n`,
      [
        `smtp.identities[0]: expected an email address (local@domain), got "*@corp.test": identities are exact ` +
          `addresses, not globs`,
      ],
    ],
    [
      "identities not a list ([smtp])",
      `[smtp]\nlisten_addr = "127.0.0.1:1"\nupstream_addr = "h:587"\nidentities = "me@corp.test"\n`,
      [`mailgator.toml:4:14: smtp.identities: expected a list, got "me@corp.test"`],
    ],
    [
      "identities not a list (account)",
      `[accounts.m]\nusername = "u"\npassword = "p"\nidentities = 3\n`,
      [`mailgator.toml:4:14: accounts.m.identities: expected a list, got 3`],
    ],
    [
      "agent names that differ only in case (the audit log's --agent compares without case)",
      `[accounts.m]\nusername = "u"\npassword = "p"\n[[agents]]\nname = "bot"\ntoken_hash = "${HASH}"\naccount = ` +
        `"m"\n[[agents]]\nname = "Bot"\ntoken_hash = "${HASH}"\naccount = "m"\n`,
      [`agents[1].name: duplicate agent name "Bot" (agent names compare without case; "bot" is taken)`],
    ],
    [
      "agent names that differ only in the case of a letter outside ASCII (--agent folds it, docs/audit.md)",
      `[accounts.m]\nusername = "u"\npassword = "p"\n[[agents]]\nname = "élodie"\ntoken_hash = "${HASH}"\naccount = ` +
        `"m"\n[[agents]]\nname = "Élodie"\ntoken_hash = "${HASH}"\naccount = "m"\n`,
      [`agents[1].name: duplicate agent name "Élodie" (agent names compare without case; "élodie" is taken)`],
    ],
    [
      "an agent name longer than a login name may be",
      `[accounts.m]\nusername = "u"\npassword = "p"\n[[agents]]\nname = "${"b".repeat(256)}"\n` +
        `token_hash = "${HASH}"\naccount = "m"\n`,
      ["agents[0].name: agent name over 255 octets: the listeners refuse longer login names (docs/config.md)"],
    ],
    [
      "bad allowed_ips",
      `[accounts.m]\nusername = "u"\npassword = "p"\n[[agents]]\nname = "b"\ntoken_hash = "${HASH}"\naccount = ` +
        `"m"\nallowed_ips = ["10.0.0.0/33"]\n`,
      [`agents[0].allowed_ips[0]: expected an IP address or CIDR range`],
    ],
    [
      "an IPv4-mapped allowed_ips range shorter than /96",
      `[accounts.m]\nusername = "u"\npassword = "p"\n[[agents]]\nname = "b"\ntoken_hash = "${HASH}"\naccount = ` +
        `"m"\nallowed_ips = ["::ffff:10.0.0.1/128", "::ffff:10.0.0.0/8"]\n`,
      [`agents[0].allowed_ips[1]: "::ffff:10.0.0.0/8" is an IPv4-mapped range shorter than /96`],
    ],
  ];
  for (const [label, text, expected] of cases) {
    test(label, () => {
      const message = problems(text);
      for (const e of expected) expect(message).toContain(e);
    });
  }

  test("two agents with the same token_hash: refused, naming both (a token would log in as either)", () => {
    const other = `sha256:${"b".repeat(64)}`;
    const text =
      `[accounts.m]\nusername = "u"\npassword = "p"\n[accounts.n]\nusername = "v"\npassword = "q"\n` +
      `[[agents]]\nname = "bot"\ntoken_hash = "${HASH}"\naccount = "m"\n` +
      `[[agents]]\nname = "other"\ntoken_hash = "${other}"\naccount = "m"\n` +
      `[[agents]]\nname = "bot-copy"\ntoken_hash = "${HASH}"\naccount = "n"\n`;
    const message = problems(text);
    expect(message).toContain(
      `mailgator.toml:17:14: agents[2].token_hash: agents "bot" (agents[0]) and "bot-copy" have the same token_hash`,
    );
    expect(message).toContain("`mailgator token new bot-copy`");
    expect(message).not.toContain("agents[1]");
    // Distinct hashes load.
    const ok = parseConfig(
      text.replace(`token_hash = "${HASH}"\naccount = "n"`, `token_hash = "sha256:${"c".repeat(64)}"\naccount = "n"`),
      "/x.toml",
    );
    expect(ok.agents.map((a) => a.name)).toEqual(["bot", "other", "bot-copy"]);
  });

  // A name is a key of a table, and every object answers to the names of Object.prototype: none of them may pass for
  // an account or group that the file does not define.
  test("names of Object.prototype are not accounts or groups the file defines", () => {
    const ACCOUNT = `[accounts.m]\nusername = "u"\npassword = "p"\n`;
    for (const name of ["toString", "__proto__", "constructor", "hasOwnProperty", "valueOf"]) {
      const agent = `${ACCOUNT}[[agents]]\nname = "bot"\ntoken_hash = "${HASH}"\naccount = "${name}"\n`;
      expect(problems(agent)).toContain(`agents[0].account: no account named "${name}" in [accounts]`);
      const notify = `${ACCOUNT}[approvals]\nnotify_account = "${name}"\n`;
      expect(problems(notify)).toContain(`approvals.notify_account: no account named "${name}" in [accounts]`);
      const ask =
        `[approvals.groups.m]\nrecipients = ["boss@example.com"]\n[[rules]]\nname = "a"\naction = "ask"\n` +
        `ask_groups = ["${name}"]\noperations = ["send"]\n`;
      expect(problems(ask)).toContain(`rules[0].ask_groups[0]: no group named "${name}" in [approvals.groups]`);
    }
    // An account that is really called toString is one.
    const real = parseConfig(
      `[accounts.toString]\nusername = "u"\npassword = "p"\n[[agents]]\nname = "bot"\ntoken_hash = "${HASH}"\n` +
        `account = "toString"\n`,
      "/x.toml",
    );
    expect(real.agents[0]!.account).toBe("toString");
    expect(Object.hasOwn(real.accounts, "toString")).toBe(true);
  });

  test("__proto__, constructor and prototype cannot name an account, a group or an agent", () => {
    for (const name of ["__proto__", "constructor", "prototype"]) {
      const reserved = "reserved (__proto__, constructor, prototype cannot be names)";
      const account = `[accounts.${name}]\nusername = "u"\npassword = "p"\n`;
      expect(problems(account)).toContain(
        `mailgator.toml:1:1: accounts.${name}: account name "${name}" is ${reserved}`,
      );
      // Not dropped on the way: an agent naming it is refused too, whatever the table held.
      const agent = `${account}[[agents]]\nname = "bot"\ntoken_hash = "${HASH}"\naccount = "${name}"\n`;
      expect(problems(agent)).toContain(`account name "${name}" is ${reserved}`);
      const group = `[approvals.groups.${name}]\nrecipients = ["boss@example.com"]\n`;
      expect(problems(group)).toContain(`approvals.groups.${name}: group name "${name}" is ${reserved}`);
      const agentName =
        `[accounts.m]\nusername = "u"\npassword = "p"\n[[agents]]\nname = "${name}"\ntoken_hash = "${HASH}"\n` +
        `account = "m"\n`;
      expect(problems(agentName)).toContain(`agents[0].name: agent name "${name}" is ${reserved}`);
    }
  });

  test("ownEntry finds a record's own keys only", () => {
    const record: Record<string, number> = { a: 1, toString: 2 };
    expect(ownEntry(record, "a")).toBe(1);
    expect(ownEntry(record, "toString")).toBe(2);
    expect(ownEntry(record, "constructor")).toBeUndefined();
    expect(ownEntry(record, "__proto__")).toBeUndefined();
    expect(ownEntry(record, "hasOwnProperty")).toBeUndefined();
    expect(ownEntry(undefined, "a")).toBeUndefined();
  });

  test("an account looked up by a name of Object.prototype is no account (upstream credentials)", async () => {
    const config = parseConfig(`[accounts.m]\nusername = "u"\npassword = "p"\n`, "/x.toml");
    const credentials = new AccountCredentials({ config, store: null });
    expect(await credentials.credentialFor("m")).toMatchObject({ kind: "password", username: "u" });
    for (const name of ["toString", "constructor", "__proto__"])
      await expect(credentials.credentialFor(name)).rejects.toThrow(`accounts: no account named "${name}"`);
  });

  test("a syntax error quotes no line of a file that names a secret", () => {
    const cases: [string, string][] = [
      // An unclosed quote in the secret's own line: the usual way a password ends up in the excerpt.
      [`[accounts.m]\nusername = "u"\npassword = "hunter2-SECRET-pw\nidentities = []\n`, "hunter2-SECRET-pw"],
      [`[oauth]\nclient_secret = "s3cr3t-value" junk\n`, "s3cr3t-value"],
      [`[accounts.m]\nx = { "password" = "inl1ne", q = }\n`, "inl1ne"],
      [`accounts.m.password = "d0tted" x\n`, "d0tted"],
      [`[[agents]]\nname = "a"\ntoken_hash = "sha256:ab12" ]\n`, "sha256:ab12"],
      // A multi-line string: the secret is on the lines after the key's, and the caret would point into it.
      [`[accounts.m]\nusername = "u"\npassword = """\nhunter2-very-secret\n`, "hunter2-very-secret"],
      [`[accounts.m]\nusername = "u"\npassword = '''\nl1teral-secret\nmore\n`, "l1teral-secret"],
      [`[accounts.m]\npassword = "ab\\qcd"\n`, "ab\\qcd"],
      // No `=`: nothing in the line says where a value starts.
      [`[accounts.m]\nusername = "u"\npassword "hunter2-no-equals"\n`, "hunter2-no-equals"],
      // The quoted lines start inside a multi-line secret, below its key's line.
      [`[accounts.m]\npassword = """\nl1\nl2\nl3\nl4\nl5\nsecret-tail"""x\n`, "secret-tail"],
      // A quoted key spelled with TOML escapes is the key it spells (`\u0077` is `w`, `\U00000074` is `t`).
      [`[accounts.m]\nusername = "u"\n"pass\\u0077ord" = "Quoted-Key-Pw"\n= oops\n`, "Quoted-Key-Pw"],
      [`[oauth]\n"client_secre\\U00000074" = "esc-secret" junk\n`, "esc-secret"],
    ];
    for (const [text, secret] of cases) {
      const message = problems(text);
      expect(message).toContain("TOML syntax error");
      expect(message).toContain("(lines not quoted: the file names secrets)");
      expect(message).not.toContain(secret);
      expect(message).not.toContain("^");
    }
    // A file without one (references and public keys are not secrets) gets its lines quoted as written.
    const message = problems(`[accounts.m]\npassword_env = "MY_VAR"\ntoken_url = "https://idp.test/t" junk\n`);
    expect(message).toContain(`password_env = "MY_VAR"`);
    expect(message).toContain(`token_url = "https://idp.test/t" junk`);
    expect(message).not.toContain("[redacted]");
  });

  test("a secret's value of the wrong type is not quoted in the error", () => {
    for (const [text, value] of [
      [`[accounts.m]\nusername = "u"\npassword = 1234567\n`, "1234567"],
      [`[accounts.m]\nusername = "u"\npassword = 3.14159e7\n`, "31415900"],
      [`[accounts.m]\nusername = "u"\n"pass\\u0077ord" = 987654\n`, "987654"],
    ] as const) {
      const message = problems(text);
      expect(message).toContain("accounts.m.password: expected string, got a value not shown (the key names a secret)");
      expect(message).not.toContain(value);
    }
    // Other keys still say what they got.
    expect(problems(`[accounts.m]\nusername = 42\npassword = "p"\n`)).toContain("got 42");
  });

  test("a missing environment variable is named, never a value", () => {
    const message = problems(`[accounts.main]\nusername = "u"\npassword_env = "MAILGATOR_TEST_MISSING"\n`);
    expect(message).toContain("accounts.main.password_env: environment variable MAILGATOR_TEST_MISSING is not set");
  });

  // docs/config.md "Vault mode": a `_env` key names a variable. A password written there by mistake was quoted back
  // in "environment variable <password> is not set", in `check`'s output and serve's log.
  test("a secret written where a variable's name goes is refused without quoting it", () => {
    for (const [key, value] of [
      ["password_env", "Hunter2-Pw!9x"],
      ["password_env", "correct horse battery"],
      ["password_env", "1START_WITH_DIGIT"],
      ["password_env", ""],
      ["client_secret_env", "Cs.7f3e/a9"],
    ] as const) {
      const oauth = key === "client_secret_env" ? 'auth = "oauth2"\nprovider = "google"\nclient_id = "i"\n' : "";
      const message = problems(`[accounts.main]\nusername = "u"\n${oauth}${key} = ${JSON.stringify(value)}\n`, {
        [value]: "the-value",
      });
      expect(message).toContain(
        `accounts.main.${key}: must be the name of an environment variable (letters, digits and _, not starting ` +
          "with a digit); what it holds is not shown",
      );
      if (value !== "") expect(message).not.toContain(value);
    }
    // A name of the longest length is looked up; one longer is refused.
    const longest = `V${"_".repeat(ENV_NAME_MAX - 1)}`;
    expect(problems(`[accounts.main]\nusername = "u"\npassword_env = "${longest}"\n`)).toContain(
      `environment variable ${longest} is not set`,
    );
    expect(problems(`[accounts.main]\nusername = "u"\npassword_env = "${longest}_"\n`)).toContain(
      "must be the name of an environment variable",
    );
  });

  test("several problems are reported together", () => {
    const message = problems(`[[rules]]\nname = "a"\naction = "allow"\nfrom = "boss"\nto = "x"\n`);
    expect(message).toContain("rules[0].from[0]");
    expect(message).toContain("rules[0].to[0]");
    expect(message).toContain("config errors (2)");
  });

  // docs/config.md "Errors": the checks that read one table against another (an agent's account, a rule's agents,
  // glob and operation names) run on a config whose every table has its shape, so shape problems come alone.
  test("shape problems are reported first, alone; the other checks follow once they are fixed", () => {
    const rule = `[[rules]]\nname = "a"\naction = "allow"\nagents = ["nobody"]\n`;
    const shape = problems(`[audit]\nretention_days = "x"\n${rule}`);
    expect(shape).toContain('audit.retention_days: expected number, got "x"');
    expect(shape).not.toContain("rules[0]");
    expect(problems(`[audit]\nretention_days = 3\n${rule}`)).toContain("rules[0].agents[0]");
  });

  test("a missing file", () => {
    expect(() => loadConfig("/nonexistent/mailgator.toml")).toThrow("file not found");
  });
});

describe("file paths", () => {
  test("an empty [audit] path, [state] path or secrets_file is refused: it would name the config's folder", () => {
    expect(problems(`${IMAP}[audit]\npath = ""\n`)).toContain('audit.path: expected a non-empty string, got ""');
    expect(problems(`${IMAP}[state]\npath = ""\n`)).toContain('state.path: expected a non-empty string, got ""');
    expect(problems(`${IMAP}[state]\nsecrets_file = ""\n`)).toContain(
      'state.secrets_file: expected a non-empty string, got ""',
    );
  });

  test("a one-character name is a file beside the config", () => {
    const c = parseConfig(`${IMAP}[audit]\npath = "a"\n[state]\npath = "s"\nsecrets_file = "k"\n`, "/cfg/m.toml");
    expect([c.audit.path, c.state.path, c.state.secretsFile]).toEqual(["/cfg/a", "/cfg/s", "/cfg/k"]);
  });
});
