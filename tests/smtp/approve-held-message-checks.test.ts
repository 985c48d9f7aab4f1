/**
 * A held message is approved only if a send of it would be taken now (docs/approvals.md "Deciding", step 1): the
 * checks the SMTP proxy makes of a message at the end of DATA (docs/smtp.md "What the message says") and of its
 * envelope addresses ("Addresses") are made again of the stored envelope and bytes before anything goes upstream.
 * A message held by an older Mailgator, before a check was added (a header line over 998 octets, RFC 5322 §2.1.1;
 * a recipient domain of one label, RFC 5321 §2.3.5; a control character in a header, RFC 5322 §3.2.2), is in the
 * state database as that version wrote it: these tests write such records directly, as it did, approve them against
 * Postfix, and see nothing reach it. The message stays held with an `APPROVE` row of decision `error`, as for any
 * check failed at approval.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { buildPreview } from "../../src/approvals/preview.ts";
import { type ApprovalContext, approve } from "../../src/approvals/service.ts";
import {
  askManagersRules,
  marker,
  message,
  postfixLog,
  sinkCopies,
  startTestProxy,
  type TestProxy,
  upstreams,
} from "./helpers.ts";

let proxy: TestProxy;

beforeAll(async () => {
  proxy = await startTestProxy({ rules: askManagersRules("http://127.0.0.1:1"), approvals: true });
});

afterAll(async () => {
  await proxy?.close();
});

/** Stores a held message as a Mailgator without the check stored it (pass-through: alice's own login). */
async function storedAsBefore(from: string, recipients: readonly string[], text: string | Buffer): Promise<string> {
  const user = upstreams().users[0]!;
  const bytes = typeof text === "string" ? Buffer.from(text, "latin1") : text;
  const row = await proxy.approvals!.hold(
    {
      envelope: { from, recipients, eightBit: false },
      message: bytes,
      account: null,
      credentials: { username: user.user, password: user.password },
      agent: user.user,
      preview: buildPreview(from, recipients, bytes, false),
    },
    { name: "outside needs a manager", index: 0, groups: ["managers"] },
    Date.now() + 600_000,
  );
  return row.id;
}

const ALICE = "alice@mailgator.test";

interface Case {
  readonly what: string;
  /** The envelope's recipients, the message and the reason the approval is refused, for the marker `m`. */
  readonly make: (m: string) => { from?: string; to: string; text: string | Buffer; reason: string | RegExp };
}

const CASES: readonly Case[] = [
  {
    what: "a To line of 999 octets (Postfix breaks it, and its last address with it)",
    make: (m) => {
      const to = `x-${m}@outside.example`;
      // 998 octets with `To: `: the last address then spans octet 999, where Postfix's SMTP client breaks the line.
      let field = "To: ";
      while (field.length < 960) field += "filler@outside.example, ";
      field += to;
      field = field.replace("filler@", `${"f".repeat(999 - field.length)}filler@`);
      expect(field.length).toBe(999);
      return {
        to,
        text: `From: ${ALICE}\r\n${field}\r\nSubject: long line ${m}\r\n\r\nHello ${m}\r\n`,
        reason: "header line too long: to (999 octets, at most 998)",
      };
    },
  },
  {
    what: "a Subject line of 1,200 octets",
    make: (m) => ({
      to: `x-${m}@outside.example`,
      text: message({ From: ALICE, Subject: `${m} ${"s".repeat(1200 - 9 - 13)}` }, `Hello ${m}\n`),
      reason: "header line too long: subject (1200 octets, at most 998)",
    }),
  },
  {
    what: "a NUL octet",
    make: (m) => ({
      to: `x-${m}@outside.example`,
      text: message({ From: ALICE, Subject: `nul ${m}` }, `Hello ${m}\0 there\n`),
      reason: "NUL octet in the message",
    }),
  },
  {
    what: "an escape sequence in the Message-ID",
    make: (m) => ({
      to: `x-${m}@outside.example`,
      text: message({ From: ALICE, "Message-ID": `<${m}\x1b[2K@mailgator.test>`, Subject: `esc ${m}` }, `Hi ${m}\n`),
      reason: "control character 0x1B in the header field message-id",
    }),
  },
  {
    what: "a To field over 8 KiB",
    make: (m) => {
      const to = `x-${m}@outside.example`;
      const folded = Array.from({ length: 400 }, (_, n) => `a${n}@outside.example`).join(",\r\n ");
      return {
        to,
        text: message({ From: ALICE, To: `${folded},\r\n ${to}`, Subject: `big to ${m}` }, `Hello ${m}\n`),
        reason: /^header field too long: to \(\d+ octets, at most 8192\)$/,
      };
    },
  },
  {
    what: "the null reverse path and no From (the upstream writes MAILER-DAEMON)",
    make: (m) => ({
      from: "",
      to: `x-${m}@outside.example`,
      text: message({ Subject: `no from ${m}` }, `Hello ${m}\n`),
      reason: "sent with <> and no From field, which the upstream would fill in as MAILER-DAEMON",
    }),
  },
  {
    what: "a recipient whose domain is one label (Postfix appends its own domain)",
    make: (m) => ({
      to: `x-${m}@outside`,
      text: message({ From: ALICE, Subject: `one label ${m}` }, `Hello ${m}\n`),
      reason:
        `the recipient <x-${m}@outside> is not accepted: ` +
        "a domain of one label (not fully qualified) is not accepted",
    }),
  },
];

for (const c of CASES) {
  test(`held before the check, ${c.what}: approving sends nothing, it stays held`, async () => {
    const m = marker();
    const made = c.make(m);
    const id = await storedAsBefore(made.from ?? ALICE, [made.to], made.text);
    const ctx: ApprovalContext = { config: proxy.config, store: proxy.approvals!, audit: proxy.audit, protocol: "cli" };
    const result = await approve(ctx, id, "test");
    expect(result.outcome).toBe("not-sent");
    const reason = result.outcome === "not-sent" ? result.reason : "";
    expect(reason).toStartWith("the message is refused as a send of it would be now: ");
    const why = reason.slice("the message is refused as a send of it would be now: ".length);
    if (typeof made.reason === "string") expect(why).toBe(made.reason);
    else expect(why).toMatch(made.reason);
    expect(proxy.approvals!.row(id)!.state).toBe("held");
    const rows = (await proxy.rows()).filter((r) => r.command === "APPROVE" && r.target === id);
    expect(rows.map((r) => [r.decision, r.reason])).toEqual([
      ["error", `approved by test; not sent, still held: ${reason}`],
    ]);
    // Nothing reached Postfix: no copy in the sink, and its log never names the marker.
    await Bun.sleep(1000);
    expect(sinkCopies(m)).toEqual([]);
    expect(postfixLog()).not.toContain(m);
  });
}

test("a held message that passes the checks is still sent", async () => {
  const m = marker();
  const text = message({ From: ALICE, To: `x-${m}@outside.example`, Subject: `fine ${m}` }, `Hello ${m}\n`);
  const id = await storedAsBefore(ALICE, [`x-${m}@outside.example`], text);
  const ctx: ApprovalContext = { config: proxy.config, store: proxy.approvals!, audit: proxy.audit, protocol: "cli" };
  const result = await approve(ctx, id, "test");
  expect(result.outcome).toBe("sent");
  expect(proxy.approvals!.row(id)!.state).toBe("sent");
  for (let n = 0; n < 100 && sinkCopies(m).length === 0; n++) await Bun.sleep(100);
  expect(sinkCopies(m)).toHaveLength(1);
});
