/**
 * The approval page reads a POST of at most MAX_FORM_BYTES (src/approvals/web.ts, docs/approvals.md "Links"): a form
 * of exactly that size decides, one octet more gets 413 and changes nothing (the message stays held, its link unused).
 */

import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
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
