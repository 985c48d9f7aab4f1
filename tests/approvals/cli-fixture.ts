/**
 * A config and a state database with one held message, for tests that run `mailgator approvals` as a process: the
 * message is held through the store as the SMTP proxy holds it (src/approvals/store.ts), with its preview built
 * from its bytes.
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { buildPreview } from "../../src/approvals/preview.ts";
import { ApprovalStore } from "../../src/approvals/store.ts";
import { SealedStore } from "../../src/state/store.ts";

const MAIN = join(import.meta.dir, "../../src/cli/main.ts");

export interface HeldForCli {
  /** The config file naming the state database, its key and the audit log, all in `dir`. */
  readonly file: string;
  readonly id: string;
  /** The state database, still open: the caller closes it (after altering the record, for some tests). */
  readonly state: SealedStore;
}

/** Holds `message` from `sender` to `recipients` under rule `rule` (group "managers"), for 10 minutes. */
export async function holdForCli(
  dir: string,
  message: Buffer,
  o: { sender?: string; recipients?: string[]; rule?: string; hasAttachment?: boolean | null } = {},
): Promise<HeldForCli> {
  const sender = o.sender ?? "bot@corp.test";
  const recipients = o.recipients ?? ["x@out.test"];
  const file = join(dir, "mailgator.toml");
  writeFileSync(
    file,
    `[audit]\npath = "${join(dir, "audit.db")}"\n\n[state]\npath = "${join(dir, "state.db")}"\n` +
      `secrets_file = "${join(dir, "secrets.key")}"\n`,
  );
  const state = SealedStore.open(join(dir, "state.db"), {
    secretsFile: join(dir, "secrets.key"),
    env: {},
    create: true,
  })!;
  const row = await new ApprovalStore(state).hold(
    {
      envelope: { from: sender, recipients, eightBit: false },
      message,
      account: "main",
      credentials: null,
      agent: "bot",
      preview: buildPreview(sender, recipients, message, o.hasAttachment ?? false),
    },
    { name: o.rule ?? "ask", index: 0, groups: ["managers"] },
    Date.now() + 600_000,
  );
  return { file, id: row.id, state };
}

/** `mailgator ARGS` as a process, with PATH only in its environment. */
export function runCli(...args: string[]): { code: number; stdout: string; stderr: string } {
  const p = Bun.spawnSync([process.execPath, MAIN, ...args], { env: { PATH: process.env["PATH"] ?? "" } });
  return { code: p.exitCode ?? -1, stdout: p.stdout.toString(), stderr: p.stderr.toString() };
}
