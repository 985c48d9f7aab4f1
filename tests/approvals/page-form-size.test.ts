/**
 * The approval page reads a POST of at most MAX_FORM_BYTES (src/approvals/web.ts, docs/approvals.md "Links"): a form
 * of exactly that size decides, one octet more gets 413 and changes nothing (the message stays held, its link unused).
 * Through the admin listener, as serve registers it, a form sent in chunks (no Content-Length) decides too.
 */

import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { registerAdminRoute, startAdmin } from "../../src/admin/server.ts";
import type { ApprovalContext } from "../../src/approvals/service.ts";
import { approvalPage, MAX_FORM_BYTES } from "../../src/approvals/web.ts";
import { ASK_RULE, askManagersConfig, heldMessage, openApprovalStores } from "./helpers.ts";

const dir = mkdtempSync(join(tmpdir(), "mg-form-size-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

test(`a form of MAX_FORM_BYTES (${MAX_FORM_BYTES}) decides; one octet more is 413 and changes nothing`, async () => {
  const auditPath = join(dir, "audit.db");
  const { state, store, audit } = openApprovalStores(join(dir, "state.db"), join(dir, "key"), auditPath);
  try {
    const ctx: ApprovalContext = { config: askManagersConfig(dir, auditPath), store, audit, protocol: "smtp" };
    const page = approvalPage(ctx);
    /** A deny of `id` whose form, padded with a field the page ignores, is `size` octets. */
    const post = (id: string, token: string, size: number) => {
      const form = `t=${token}&action=deny&confirm=deny&pad=`;
      const body = `${form}${"x".repeat(size - form.length)}`;
      expect(Buffer.byteLength(body)).toBe(size);
      return page.handle(
        new Request(`http://admin.test/approvals/${id}`, {
          method: "POST",
          headers: {
            origin: "http://admin.test",
            "content-type": "application/x-www-form-urlencoded",
            "content-length": String(size),
          },
          body,
        }),
      );
    };
    const over = await store.hold(heldMessage(), ASK_RULE, Date.now() + 3_600_000);
    const refused = await post(over.id, store.token(over), MAX_FORM_BYTES + 1);
    expect(refused.status).toBe(413);
    expect(store.row(over.id)!.state).toBe("held");
    expect(store.tokenUsed(over.id)).toBe(false);

    const exact = await store.hold(heldMessage(), ASK_RULE, Date.now() + 3_600_000);
    const denied = await post(exact.id, store.token(exact), MAX_FORM_BYTES);
    expect(denied.status).toBe(200);
    expect(await denied.text()).toContain("Denied");
    expect(store.row(exact.id)!.state).toBe("denied");
  } finally {
    audit.close();
    state.close();
  }
});

test("through the admin listener, a chunked form decides; one past it is 413; no body at all is 411", async () => {
  const auditPath = join(dir, "chunked-audit.db");
  const { state, store, audit } = openApprovalStores(join(dir, "chunked.db"), join(dir, "chunked-key"), auditPath);
  const ctx: ApprovalContext = { config: askManagersConfig(dir, auditPath), store, audit, protocol: "smtp" };
  const page = approvalPage(ctx);
  // As serve registers the pages (src/cli/commands/serve.ts).
  const remove = registerAdminRoute("POST", "/approvals", (req) => page.handle(req), {
    auth: "none",
    maxBodyBytes: MAX_FORM_BYTES,
  });
  const admin = startAdmin({
    config: { listenAddr: { host: "127.0.0.1", port: 0 }, allowRemote: false, tokenHash: null },
    health: () => ({ problems: [], checks: {} }),
  });
  /** POSTs `body` to `id`'s page in HTTP/1.1 chunks of 100 octets; the status line's code. */
  const chunked = (id: string, body: string) =>
    new Promise<number>((resolve, reject) => {
      const socket = connect(admin.address.port, "127.0.0.1");
      let answer = "";
      socket.on("data", (d) => {
        answer += d.toString("latin1");
        if (answer.includes("\r\n")) {
          resolve(Number(answer.split(" ")[1]));
          socket.destroy();
        }
      });
      socket.on("error", reject);
      const chunks = body.match(/[\s\S]{1,100}/g)!.map((c) => `${c.length.toString(16)}\r\n${c}\r\n`);
      socket.write(
        `POST /approvals/${id} HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: http://admin.test\r\n` +
          "Content-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n" +
          `${chunks.join("")}0\r\n\r\n`,
      );
    });
  try {
    const over = await store.hold(heldMessage(), ASK_RULE, Date.now() + 3_600_000);
    const form = `t=${store.token(over)}&action=deny&confirm=deny&pad=`;
    expect(await chunked(over.id, `${form}${"x".repeat(MAX_FORM_BYTES + 1 - form.length)}`)).toBe(413);
    expect(store.row(over.id)!.state).toBe("held");
    expect(store.tokenUsed(over.id)).toBe(false);

    // A POST with no body at all sent no form: 411 says so (it was 413, "Request too large"), and nothing changes.
    const bare = await new Promise<string>((resolve, reject) => {
      const socket = connect(admin.address.port, "127.0.0.1");
      let answer = "";
      socket.on("data", (d) => {
        answer += d.toString("latin1");
        if (answer.includes("</html>")) {
          resolve(answer);
          socket.destroy();
        }
      });
      socket.on("error", reject);
      socket.write(`POST /approvals/${over.id} HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: http://admin.test\r\n\r\n`);
    });
    expect(bare).toStartWith("HTTP/1.1 411 ");
    expect(bare).toContain("No form was sent.");
    expect(store.row(over.id)!.state).toBe("held");
    expect(store.tokenUsed(over.id)).toBe(false);

    const small = await store.hold(heldMessage(), ASK_RULE, Date.now() + 3_600_000);
    expect(await chunked(small.id, `t=${store.token(small)}&action=deny&confirm=deny`)).toBe(200);
    expect(store.row(small.id)!.state).toBe("denied");
  } finally {
    remove();
    await admin.close();
    audit.close();
    state.close();
  }
});
