/**
 * Makes sure Debian's Dovecot, Postfix, swaks and (on request) nginx, and Chromium, fail2ban, mutt and isync are
 * installed.
 *
 * As root, missing packages are installed with apt-get; package scripts are kept
 * from starting the system daemons (they would bind *:143, *:993, *:25, *:80) by a
 * policy-rc.d that exits 101, created only for the install when none exists.
 * Without root, the error names the exact command to run.
 */
import { existsSync, unlinkSync, writeFileSync } from "node:fs";

const MAIL_SERVERS = [
  "dovecot-core",
  "dovecot-imapd",
  "dovecot-lmtpd",
  "postfix",
  "swaks",
  "libnet-ssleay-perl",
  "openssl",
] as const;
const NGINX = ["nginx", "libnginx-mod-mail"] as const;
/**
 * What only the tests use, `npm test` asks for them: the browser the approval page's test drives (tests/browser/),
 * fail2ban, whose fail2ban-regex runs the filter docs/operations.md gives (tests/fixtures/fail2ban.ts), and the mail
 * clients tests/e2e/ runs as an agent would: mutt (tests/e2e/mutt.test.ts) and isync's mbsync
 * (tests/e2e/mbsync.test.ts).
 */
const BROWSER = ["chromium", "fail2ban", "mutt", "isync"] as const;
/** Where Debian's chromium package puts the browser. */
export const CHROMIUM = "/usr/bin/chromium";

const POLICY_RC_D = "/usr/sbin/policy-rc.d";

/** Debian packages still to install for the requested servers (empty when all are present). */
export function missingPackages(options: { nginx: boolean; browser?: boolean }): string[] {
  const wanted: string[] = [...MAIL_SERVERS, ...(options.nginx ? NGINX : []), ...(options.browser ? BROWSER : [])];
  if (!existsSync("/usr/bin/dpkg-query")) return wanted;
  // dpkg-query exits 1 when a name is unknown but still prints the known ones.
  // biome-ignore lint/suspicious/noTemplateCurlyInString: a dpkg-query format, not a template
  const result = Bun.spawnSync(["dpkg-query", "-W", "-f=${Package} ${Status}\\n", ...wanted], {
    stdout: "pipe",
    stderr: "ignore",
  });
  const installed = new Set<string>();
  for (const line of result.stdout.toString().split("\n")) {
    const [name] = line.split(" ");
    if (name !== undefined && line.endsWith("install ok installed")) installed.add(name.split(":")[0] ?? name);
  }
  return wanted.filter((name) => !installed.has(name));
}

/** The command a person runs to install the packages by hand. */
export function installCommand(packages: readonly string[]): string {
  return `sudo apt-get update && sudo apt-get install -y --no-install-recommends ${packages.join(" ")}`;
}

/**
 * Installs what is missing, or throws an Error that says what to install.
 * `log` receives progress lines (installs take up to a minute).
 */
export function ensurePackages(options: { nginx: boolean; browser?: boolean; log: (line: string) => void }): void {
  const missing = missingPackages(options);
  if (missing.length === 0) return;
  if (process.getuid?.() !== 0) {
    throw new Error(
      `upstreams: missing Debian packages ${missing.join(", ")}; install them with:\n  ${installCommand(missing)}`,
    );
  }
  if (!existsSync("/usr/bin/apt-get")) {
    throw new Error(
      `upstreams: missing packages ${missing.join(", ")} and no apt-get here; install Dovecot 2.3, ` +
        `Postfix 3.x, swaks, nginx with its mail module, Chromium, fail2ban, mutt and isync (mbsync)`,
    );
  }
  options.log(`upstreams: installing ${missing.join(" ")} (apt-get, about a minute)`);
  const createdPolicy = !existsSync(POLICY_RC_D);
  if (createdPolicy)
    writeFileSync(
      POLICY_RC_D,
      "#!/bin/sh\n# Keep package scripts from starting system daemons during install.\nexit 101\n",
      { mode: 0o755 },
    );
  try {
    const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
    run(["apt-get", "update", "-q"], env);
    run(["apt-get", "install", "-y", "-q", "--no-install-recommends", ...missing], env);
  } finally {
    if (createdPolicy) unlinkSync(POLICY_RC_D);
  }
  const still = missingPackages(options);
  if (still.length > 0) throw new Error(`upstreams: apt-get finished but ${still.join(", ")} is still missing`);
}

function run(argv: string[], env: Record<string, string | undefined>): void {
  const result = Bun.spawnSync(argv, { env, stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  if (result.exitCode !== 0) {
    const output = `${result.stdout.toString()}${result.stderr.toString()}`.trim().split("\n").slice(-20).join("\n");
    throw new Error(`upstreams: ${argv.join(" ")} failed (exit ${result.exitCode}):\n${output}`);
  }
}

if (import.meta.main) {
  ensurePackages({
    nginx: process.argv.includes("--nginx"),
    browser: process.argv.includes("--browser"),
    log: (line) => console.error(line),
  });
}
