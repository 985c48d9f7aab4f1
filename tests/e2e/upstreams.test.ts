// The fixtures themselves, against the real Dovecot and Postfix: the seeder's manifest is what
// Dovecot serves, Postfix delivers per envelope recipient, the hooks and AUTH work.
import { describe, expect, test } from "bun:test";
import nodemailer from "nodemailer";
import type { SeededMessage } from "../fixtures/index.ts";
import {
  connectImap,
  createMailbox,
  sinkRecipients,
  uniqueToken,
  upstreams,
  waitForDelivery,
} from "../fixtures/index.ts";
import { defineIsolationTest } from "../fixtures/isolation.ts";

interface BodyNode {
  readonly disposition?: string;
  readonly childNodes?: readonly BodyNode[];
}

function hasAttachment(node: BodyNode | undefined): boolean {
  if (node === undefined) return false;
  return node.disposition === "attachment" || (node.childNodes ?? []).some(hasAttachment);
}

// First, so that it runs while upstreams-isolation.test.ts runs its half in another worker.
defineIsolationTest("a");

describe("seeded mailbox", () => {
  test("Dovecot's UID FETCH 1:* (ENVELOPE ...) matches the seeder's manifest", async () => {
    const folders = { INBOX: 120, "Archive/2025": 40, "Archive/2026": 30, Sent: 20, Drafts: 10 };
    const mailbox = await createMailbox({ seed: { folders, seed: 42 } });
    expect(Object.keys(mailbox.manifest.folders)).toEqual(Object.keys(folders));
    const all = Object.values(mailbox.manifest.folders).flat();
    // The mix the rules will be tested against is really there.
    expect(all.some((m) => m.fromHeader === '"notifications@shop.test" <spam@evil.test>')).toBe(true);
    expect(all.some((m) => m.from === "notifications@shop.test")).toBe(true);
    expect(all.some((m) => m.hasAttachment)).toBe(true);
    expect(all.some((m) => m.cc.length > 0)).toBe(true);

    const client = await connectImap(mailbox);
    try {
      for (const [folder, expected] of Object.entries(mailbox.manifest.folders)) {
        await client.mailboxOpen(folder, { readOnly: true });
        const seen: SeededMessage[] = [];
        for await (const message of client.fetch(
          "1:*",
          { uid: true, envelope: true, flags: true, size: true, internalDate: true, bodyStructure: true },
          { uid: true },
        )) {
          const envelope = message.envelope;
          // Group syntax shows up as entries without an address (RFC 3501 §7.4.2).
          const addresses = (list: readonly { address?: string | undefined }[] | undefined) =>
            (list ?? []).flatMap((a) => (a.address ? [a.address.toLowerCase()] : []));
          const from = envelope?.from?.[0];
          seen.push({
            uid: message.uid,
            from: from?.address?.toLowerCase() ?? "",
            fromName: from?.name ?? "",
            fromHeader: expected[message.uid - 1]?.fromHeader ?? "",
            to: addresses(envelope?.to),
            cc: addresses(envelope?.cc),
            subject: envelope?.subject ?? "",
            messageId: envelope?.messageId ?? "",
            date: new Date(message.internalDate ?? 0).toISOString(),
            hasAttachment: hasAttachment(message.bodyStructure as BodyNode | undefined),
            flags: [...(message.flags ?? [])].filter((flag) => flag !== "\\Recent"),
            size: message.size ?? -1,
          });
        }
        expect({ folder, messages: seen }).toEqual({ folder, messages: [...expected] });
      }
    } finally {
      await client.logout();
    }
  });

  test("the same seed gives the same messages", async () => {
    const a = await createMailbox({ seed: { count: 50, seed: 7 } });
    const b = await createMailbox({ seed: { count: 50, seed: 7, owner: a.address } });
    expect(b.manifest).toEqual(a.manifest);
  });
});

describe("Postfix", () => {
  test("delivers to the test user's Dovecot mailbox and exactly the other recipients to the sink", async () => {
    const servers = upstreams();
    const mailbox = await createMailbox();
    const token = uniqueToken();
    const others = [`carol-${token}@corp.test`, `dave-${token}@partner.test`];
    const transport = nodemailer.createTransport({
      host: servers.host,
      port: servers.ports.smtp,
      secure: false,
      ignoreTLS: true,
    });
    const info = await transport.sendMail({
      envelope: { from: `boss-${token}@corp.test`, to: [mailbox.address, ...others] },
      from: `boss-${token}@corp.test`,
      to: mailbox.address,
      cc: others[0],
      subject: `three recipients ${token}`,
      messageId: `<${token}@e2e.test>`,
      text: "one to the user, two to the sink",
    });
    transport.close();
    expect(info.accepted.sort()).toEqual([mailbox.address, ...others].sort());

    const delivered = await waitForDelivery(mailbox, token);
    expect(delivered).toHaveLength(1);
    expect(await sinkRecipients(token, { count: 2 })).toEqual(others.sort());

    const client = await connectImap(mailbox, { security: "starttls" });
    try {
      await client.mailboxOpen("INBOX");
      const found = await client.search({ header: { "message-id": `<${token}@e2e.test>` } }, { uid: true });
      expect(found).toHaveLength(1);
      const message = await client.fetchOne(String((found as number[])[0]), { envelope: true }, { uid: true });
      expect(message && message.envelope?.subject).toBe(`three recipients ${token}`);
    } finally {
      await client.logout();
    }
  });

  test("recipient hooks: reject* → 550, tempfail* → 451, others accepted", async () => {
    const servers = upstreams();
    const token = uniqueToken();
    const transport = nodemailer.createTransport({
      host: servers.host,
      port: servers.ports.smtp,
      secure: false,
      ignoreTLS: true,
    });
    const info = await transport.sendMail({
      envelope: {
        from: `x-${token}@ext.test`,
        to: [`reject-${token}@corp.test`, `tempfail-${token}@corp.test`, `ok-${token}@corp.test`],
      },
      from: `x-${token}@ext.test`,
      to: `ok-${token}@corp.test`,
      subject: `hooks ${token}`,
      text: "hooks",
    });
    transport.close();
    expect(info.accepted).toEqual([`ok-${token}@corp.test`]);
    const codes = Object.fromEntries(
      (info.rejectedErrors ?? []).map((error) => [
        (error as unknown as { recipient: string }).recipient,
        (error as unknown as { responseCode: number }).responseCode,
      ]),
    );
    expect(codes).toEqual({ [`reject-${token}@corp.test`]: 550, [`tempfail-${token}@corp.test`]: 451 });
    expect(await sinkRecipients(token)).toEqual([`ok-${token}@corp.test`]);
  });

  test("SMTP AUTH PLAIN over implicit TLS with a test user's password; a wrong one is refused", async () => {
    const servers = upstreams();
    const mailbox = await createMailbox();
    const token = uniqueToken();
    const tls = { ca: await Bun.file(servers.caFile).text(), servername: servers.tlsName };
    const good = nodemailer.createTransport({
      host: servers.host,
      port: servers.ports.smtps,
      secure: true,
      tls,
      auth: { user: mailbox.user, pass: mailbox.password },
      authMethod: "PLAIN",
    });
    await good.sendMail({
      from: mailbox.address,
      to: `auth-${token}@ext.test`,
      subject: `auth ${token}`,
      text: "auth",
    });
    good.close();
    expect(await sinkRecipients(token)).toEqual([`auth-${token}@ext.test`]);

    const bad = nodemailer.createTransport({
      host: servers.host,
      port: servers.ports.smtps,
      secure: true,
      tls,
      auth: { user: mailbox.user, pass: "wrong" },
      authMethod: "PLAIN",
    });
    const error = await bad.verify().then(
      () => undefined,
      (failure: unknown) => failure as { responseCode?: number },
    );
    bad.close();
    expect(error?.responseCode).toBe(535);
  });
});

describe("Dovecot", () => {
  test("plain port offers STARTTLS, implicit TLS verifies against the test CA, special-use folders exist", async () => {
    const mailbox = await createMailbox();
    for (const security of ["starttls", "imaps"] as const) {
      const client = await connectImap(mailbox, { security });
      try {
        expect(client.secureConnection || security === "starttls").toBe(true);
        const list = await client.list();
        const uses = Object.fromEntries(list.map((folder) => [folder.path, folder.specialUse ?? ""]));
        expect(uses).toEqual({
          INBOX: "\\Inbox",
          Drafts: "\\Drafts",
          Sent: "\\Sent",
          Trash: "\\Trash",
          Junk: "\\Junk",
          Archive: "\\Archive",
        });
      } finally {
        await client.logout();
      }
    }
  });
});
