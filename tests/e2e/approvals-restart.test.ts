/**
 * Held messages across a restart of `mailgator serve` (docs/approvals.md "What is guaranteed", "When no rule asks
 * any more"), against Postfix: a link left marked used by a decision the process never finished works again at the
 * next start; and a serve whose config no longer asks still expires the messages an earlier config held (their
 * bytes and rows go), with a warning, though it serves no approval page.
 */

import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort } from "../../scripts/upstreams/ports.ts";
import { ApprovalStore } from "../../src/approvals/store.ts";
import { AuditLog } from "../../src/audit/index.ts";
import { SealedStore } from "../../src/state/store.ts";
import { createMailbox, heldId, smtpListener, type TestMailbox, uniqueToken } from "../fixtures/index.ts";
import { serveConfig } from "./config.ts";
import { type Served, serveChild } from "./serve-child.ts";

setDefaultTimeout(60_000);

const SENDER = "me@corp.test";

/** The SMTP listener, with the sender's address as its one identity. */
const listeners = () => `${smtpListener()}identities = ["${SENDER}"]\n`;

let dir: string;
let mailbox: TestMailbox;
let adminPort: number;

beforeAll(async () => {
  mailbox = await createMailbox({ name: "approvals-restart" });
  dir = mkdtempSync(join(tmpdir(), "mg-approvals-restart-"));
  adminPort = await freePort();
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

/** Writes `<folder>/mailgator.toml`: the SMTP listener, the audit log and state database in `folder`, then `rest`. */
function writeConfigIn(folder: string, rest: string): string {
  const file = join(folder, "mailgator.toml");
  writeFileSync(file, serveConfig({ listeners: listeners(), dir: folder }, rest));
  return file;
}

/** The config, with the outside rule asking or, once the owner changed it, denying. */
function writeConfig(outside: "ask" | "deny"): string {
  const file = join(dir, "mailgator.toml");
  writeFileSync(
    file,
    `${serveConfig({ listeners: listeners(), dir, adminPort, approvals: { timeout: "1h" } })}
[[rules]]
name = "Outside"
operations = ["send"]
action = "${outside}"
${outside === "ask" ? 'ask_groups = ["managers"]' : ""}
`,
  );
  return file;
}

async function start(outside: "ask" | "deny"): Promise<Served> {
  const served = serveChild(writeConfig(outside));
  await served.waitForLog(/admin listening on http:\/\/127\.0\.0\.1:\d+/);
  return served;
}

async function stop(served: Served): Promise<void> {
  served.proc.kill("SIGTERM");
  await served.proc.exited;
}

/** Holds one message through `served`'s SMTP listener (raw SMTP, the agent's own login); its id. */
async function hold(served: Served, token: string): Promise<string> {
  const port = await served.port("SMTP");
  const socket = await Bun.connect({
    hostname: "127.0.0.1",
    port,
    socket: {
      data: (_s, d) => {
        chunks.push(Buffer.from(d).toString());
      },
    },
  });
  const chunks: string[] = [];
  const reply = async (): Promise<string> => {
    for (let i = 0; i < 400; i++) {
      const text = chunks.join("");
      if (/(^|\r\n)\d{3} [^\r\n]*\r\n$/.test(text)) {
        chunks.length = 0;
        return text;
      }
      await Bun.sleep(25);
    }
    throw new Error(`no reply: ${chunks.join("")}`);
  };
  const say = async (line: string): Promise<string> => {
    socket.write(`${line}\r\n`);
    return reply();
  };
  await reply();
  await say("EHLO client.test");
  expect(
    await say(`AUTH PLAIN ${Buffer.from(`\0${mailbox.user}\0${mailbox.password}`).toString("base64")}`),
  ).toStartWith("235");
  expect(await say(`MAIL FROM:<${SENDER}>`)).toStartWith("250");
  expect(await say(`RCPT TO:<${token}@outside.example>`)).toStartWith("250");
  expect(await say("DATA")).toStartWith("354");
  const final = await say(`From: ${SENDER}\r\nTo: ${token}@outside.example\r\nSubject: ${token}\r\n\r\nHello\r\n.`);
  socket.end();
  return heldId(final);
}

/** Runs `f` on the state database's approvals (serve stopped, or alongside it: SQLite in WAL mode). */
function withStore<T>(f: (store: ApprovalStore) => T): T {
  const state = SealedStore.open(join(dir, "state.db"), {
    secretsFile: join(dir, "secrets.key"),
    env: {},
    create: false,
  });
  if (state === null) throw new Error("no state database");
  try {
    return f(new ApprovalStore(state));
  } finally {
    state.close();
  }
}

describe("held messages across a restart", () => {
  test("a state database that only counts quotas is not taken for one with held messages, at each start", async () => {
    const quotaDir = mkdtempSync(join(tmpdir(), "mg-quotas-only-"));
    try {
      const file = writeConfigIn(
        quotaDir,
        `
[[quotas]]
name = "Default"
sends_per_day = 200

[[rules]]
name = "Outside"
operations = ["send"]
action = "allow"
`,
      );
      for (let run = 0; run < 2; run++) {
        const served = serveChild(file);
        await served.port("SMTP");
        await stop(served);
        expect(served.logs()).not.toContain("cannot look for held messages");
        expect(served.logs()).not.toContain("held under an earlier config");
      }
      expect(existsSync(join(quotaDir, "state.db"))).toBe(true);
      expect(existsSync(join(quotaDir, "secrets.key"))).toBe(false);
    } finally {
      rmSync(quotaDir, { recursive: true, force: true });
    }
  });

  test("a link left used by a decision the process never finished is given back at the next start", async () => {
    const token = uniqueToken("link");
    let served = await start("ask");
    const id = await hold(served, token);
    await stop(served);
    // What a decision leaves when the process dies between taking the link and changing the message's state.
    const link = withStore((store) => {
      expect(store.useToken(id)).toBe(true);
      return `http://127.0.0.1:${adminPort}/approvals/${id}?t=${store.token(store.row(id)!)}`;
    });
    served = await start("ask");
    try {
      await served.waitForLog(/1 link\(s\) in use when the process stopped work again/);
      const page = await fetch(link);
      expect(page.status).toBe(200);
      expect(await page.text()).toContain("Approve this message?");
    } finally {
      await stop(served);
    }
    withStore((store) => expect(store.row(id)!.state).toBe("held"));
  });

  test("a config that no longer asks still expires what an earlier one held; no page is served", async () => {
    const token = uniqueToken("expire");
    let served = await start("ask");
    const id = await hold(served, token);
    await stop(served);
    withStore((store) => {
      expect(store.row(id)!.state).toBe("held");
      store.state.db.query("UPDATE approvals SET expires = ? WHERE id = ?").run(Date.now() - 1, id);
    });
    served = await start("deny");
    try {
      await served.waitForLog(/message\(s\) held under an earlier config wait in .*but no rule asks any more/);
      for (let i = 0; i < 200 && withStore((store) => store.row(id)!.state) === "held"; i++) await Bun.sleep(50);
      withStore((store) => expect(store.row(id)!.state).toBe("expired"));
      expect((await fetch(`http://127.0.0.1:${adminPort}/approvals/${id}?t=x`)).status).toBe(404);
    } finally {
      await stop(served);
    }
    withStore((store) => expect(store.details(id)).toBeNull());
    const audit = AuditLog.open(join(dir, "audit.db"), { readonly: true });
    try {
      const rows = audit.query({ limit: 1000 }).filter((r) => r.command === "APPROVAL EXPIRED");
      expect(rows.some((r) => JSON.stringify(r).includes(id))).toBe(true);
    } finally {
      await audit.close();
    }
  });
});
