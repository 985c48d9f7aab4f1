/**
 * Room on the state database's disk for a held message (HELD_DISK_RESERVE_BYTES, docs/approvals.md "Limits"): a
 * message is held only when the file system keeps twice its size and the reserve free, so that a full disk never
 * leaves the held messages impossible to deny or expire, every quota charge failing, and `serve` unable to start.
 * Held through the SMTP proxy in front of Postfix; the free space is the store's `diskFree`, as no test can fill a
 * real disk to the octet. At the limit and one past it, and with two messages stored at once.
 */

import { expect, test } from "bun:test";
import { HELD_DISK_RESERVE_BYTES } from "../../src/approvals/store.ts";
import { heldId } from "../fixtures/index.ts";
import { ASK_OUTSIDE_RULES, dataPayload, loggedIn, message, startTestProxy } from "../smtp/helpers.ts";

const RULES = `${ASK_OUTSIDE_RULES}
[[quotas]]
name = "Default"
sends_per_hour = 2
`;

/** The same octets each time, so that every hold needs the same room. */
const TEXT = message({ From: "alice@mailgator.test", Subject: "disk reserve" }, "The same text each time.\n");

test("held with twice its size and the reserve free; one octet less is refused, and not charged", async () => {
  const proxy = await startTestProxy({ rules: RULES, approvals: true });
  const store = proxy.approvals!;
  const c = await loggedIn(proxy.port);
  const send = async (to: string): Promise<{ code: number; text: string }> => {
    expect((await c.command("MAIL FROM:<alice@mailgator.test>")).code).toBe(250);
    expect((await c.command(`RCPT TO:<${to}>`)).code).toBe(250);
    expect((await c.command("DATA")).code).toBe(354);
    c.write(dataPayload(TEXT));
    const r = await c.reply();
    return { code: r.code, text: r.lines.join(" ") };
  };
  try {
    // The real file system's free space, by default.
    const first = await send("first@outside.example");
    expect(first.code).toBe(250);
    const size = store.details(heldId(first.text))!.preview.size;
    const needed = 2 * size + HELD_DISK_RESERVE_BYTES;

    store.diskFree = () => needed - 1;
    expect(await send("past@outside.example")).toEqual({
      code: 452,
      text: "4.3.1 Insufficient storage to hold the message for approval; nothing was sent, try later",
    });
    expect(store.list()).toHaveLength(1);
    expect((await proxy.rows()).findLast((r) => r.command === "DATA")).toMatchObject({
      decision: "deny",
      reason:
        `held for approval, but the state database's file system has ${needed - 1} octets free, fewer than the ` +
        `${needed} a hold of this message needs (twice its size and ${HELD_DISK_RESERVE_BYTES} more)`,
    });

    store.diskFree = () => needed;
    const at = await send("at@outside.example");
    expect(at.code).toBe(250);
    expect(store.row(heldId(at.text))!.state).toBe("held");
    // Two sends in the hour: the held ones; the refusal above took none.
    const over = await send("colleague@corp.test");
    expect(over.code).toBe(452);
    expect(over.text).toContain("sends_per_hour 2 (used 2)");
  } finally {
    await c.command("QUIT");
    await proxy.close();
  }
});

test("two messages stored at once each need their own room", async () => {
  const proxy = await startTestProxy({ rules: RULES, approvals: true });
  const store = proxy.approvals!;
  try {
    const size = 10 * 1024 * 1024;
    store.diskFree = () => 4 * size + HELD_DISK_RESERVE_BYTES - 1;
    const one = store.reserveSpace(size);
    expect(typeof one).toBe("function");
    expect(store.reserveSpace(size)).toEqual({
      free: 2 * size + HELD_DISK_RESERVE_BYTES - 1,
      needed: 2 * size + HELD_DISK_RESERVE_BYTES,
    });
    (one as () => void)();
    const again = store.reserveSpace(size);
    expect(typeof again).toBe("function");
    (again as () => void)();
    // A file system that cannot be asked has no room: refused, never guessed.
    store.diskFree = () => {
      throw new Error("statfs failed");
    };
    expect(store.reserveSpace(1)).toEqual({ free: 0, needed: 2 + HELD_DISK_RESERVE_BYTES });
  } finally {
    await proxy.close();
  }
});
