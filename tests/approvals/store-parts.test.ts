/**
 * A held message's bytes in sealed parts of HELD_PART_BYTES (src/approvals/store.ts, docs/approvals.md "Limits"):
 * stored one part per turn of the event loop, read back byte for byte, refused when a part is altered, moved,
 * missing or swapped for another, wiped with the message, never left behind by a store that failed or a process
 * that stopped, and records written before parts still read.
 */

import { afterAll, expect, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { buildPreview } from "../../src/approvals/preview.ts";
import {
  ApprovalStore,
  HELD_KIND,
  HELD_PART_BYTES,
  HELD_PART_KIND,
  type HeldMessage,
  HoldStopped,
  ORPHAN_PART_AGE_MS,
} from "../../src/approvals/store.ts";
import { SealedRecordError, SealedStore } from "../../src/state/store.ts";

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function open(): { store: ApprovalStore; state: SealedStore } {
  const dir = mkdtempSync(join(tmpdir(), "mg-store-parts-"));
  dirs.push(dir);
  const state = SealedStore.open(join(dir, "state.db"), { secretsFile: join(dir, "key"), env: {}, create: true })!;
  return { store: new ApprovalStore(state), state };
}

/** A message of `bytes` octets: a header, then random bytes (every octet value occurs). */
function heldOf(bytes: number): HeldMessage {
  const head = Buffer.from("Subject: parts\r\n\r\n");
  const message = Buffer.concat([head, randomBytes(bytes - head.length)]);
  return {
    envelope: { from: "a@x.test", recipients: ["b@y.test"], eightBit: true },
    message,
    account: "mail",
    credentials: null,
    agent: "bot",
    preview: buildPreview("a@x.test", ["b@y.test"], message, false),
  };
}

/** Counts the turns of the event loop until `stop()`, which gives their number. */
function countTurns(): { stop(): number } {
  let turns = 0;
  let counting = true;
  const tick = () => {
    turns++;
    if (counting) setImmediate(tick);
  };
  setImmediate(tick);
  return {
    stop() {
      counting = false;
      return turns;
    },
  };
}

const RULE = { name: "hold", index: 0, groups: ["m"] };
const LATER = Date.now() + 3_600_000;

function partIds(state: SealedStore, id: string): string[] {
  return (
    state.db.query("SELECT id FROM sealed WHERE kind = ? AND id LIKE ? ORDER BY id").all(HELD_PART_KIND, `${id}.%`) as {
      id: string;
    }[]
  ).map((r) => r.id);
}

test("the bytes are stored in parts of HELD_PART_BYTES and read back exactly; the details without them", async () => {
  const { store, state } = open();
  try {
    for (const size of [HELD_PART_BYTES, HELD_PART_BYTES + 1, Math.floor(2.5 * HELD_PART_BYTES)]) {
      const held = heldOf(size);
      const row = await store.hold(held, RULE, LATER);
      expect(partIds(state, row.id)).toHaveLength(Math.ceil(size / HELD_PART_BYTES));
      expect((await store.readMessage(row.id))!.message.equals(held.message)).toBe(true);
      const details = store.details(row.id)!;
      expect("message" in details).toBe(false);
      expect(details.preview).toEqual(held.preview);
      // The record of the details is small: the bytes are only in the parts.
      const box = state.db
        .query("SELECT length(box) AS n FROM sealed WHERE kind = ? AND id = ?")
        .get(HELD_KIND, row.id);
      expect((box as { n: number }).n).toBeLessThan(HELD_PART_BYTES / 16);
    }
  } finally {
    state.close();
  }
});

test("the event loop turns between parts: other work runs while a large message is stored", async () => {
  const { store, state } = open();
  try {
    const parts = 8;
    const turns = countTurns();
    const row = await store.hold(heldOf(parts * HELD_PART_BYTES), RULE, LATER);
    // One turn at least before each part after the first (one synchronous store would let none run).
    expect(turns.stop()).toBeGreaterThanOrEqual(parts - 1);
    expect(store.row(row.id)!.state).toBe("held");
  } finally {
    state.close();
  }
});

test("read back one part per turn (readMessage): the same bytes; decided meanwhile, it reads as gone", async () => {
  const { store, state } = open();
  try {
    const parts = 6;
    const held = heldOf(parts * HELD_PART_BYTES);
    const row = await store.hold(held, RULE, LATER);
    const turns = countTurns();
    const read = await store.readMessage(row.id);
    expect(turns.stop()).toBeGreaterThanOrEqual(parts - 1);
    expect(read!.message.equals(held.message)).toBe(true);
    // Denied between two of its parts: the message is gone, not damaged.
    const reading = store.readMessage(row.id);
    await new Promise((resolve) => setImmediate(resolve));
    expect(store.deny(row.id, "boss", null)).toBe("held");
    expect(await reading).toBeNull();
  } finally {
    state.close();
  }
});

test("a part altered, moved to another place or message, missing or replaced: the message does not open", async () => {
  const { store, state } = open();
  try {
    const size = 3 * HELD_PART_BYTES;
    const a = await store.hold(heldOf(size), RULE, LATER);
    const b = await store.hold(heldOf(size), RULE, LATER);
    const box = (id: string) =>
      (state.db.query("SELECT box FROM sealed WHERE kind = ? AND id = ?").get(HELD_PART_KIND, id) as { box: Buffer })
        .box;
    const setBox = (id: string, value: Uint8Array) =>
      state.db.query("UPDATE sealed SET box = ? WHERE kind = ? AND id = ?").run(value, HELD_PART_KIND, id);
    const original = Buffer.from(box(`${a.id}.1`));
    const nonce = state.db.query("SELECT nonce FROM sealed WHERE kind = ? AND id = ?").get(HELD_PART_KIND, `${a.id}.1`);
    // One bit flipped.
    const flipped = Buffer.from(original);
    flipped[10]! ^= 1;
    setBox(`${a.id}.1`, flipped);
    await expect(store.readMessage(a.id)).rejects.toThrow(SealedRecordError);
    setBox(`${a.id}.1`, original);
    expect(await store.readMessage(a.id)).not.toBeNull();
    // Part 1 of the other message (its nonce too), or part 0 of this one, in its place.
    for (const from of [`${b.id}.1`, `${a.id}.0`]) {
      const other = state.db.query("SELECT nonce, box FROM sealed WHERE kind = ? AND id = ?").get(HELD_PART_KIND, from);
      const { nonce: n, box: x } = other as { nonce: Buffer; box: Buffer };
      state.db
        .query("UPDATE sealed SET nonce = ?, box = ? WHERE kind = ? AND id = ?")
        .run(n, x, HELD_PART_KIND, `${a.id}.1`);
      await expect(store.readMessage(a.id)).rejects.toThrow(SealedRecordError);
    }
    const { nonce: n0 } = nonce as { nonce: Buffer };
    state.db
      .query("UPDATE sealed SET nonce = ?, box = ? WHERE kind = ? AND id = ?")
      .run(n0, original, HELD_PART_KIND, `${a.id}.1`);
    expect(await store.readMessage(a.id)).not.toBeNull();
    // A part sealed properly, but not the bytes that were held (the row's SHA-256 says so).
    state.put(HELD_PART_KIND, `${a.id}.2`, Buffer.alloc(HELD_PART_BYTES, 0x41));
    await expect(store.readMessage(a.id)).rejects.toThrow("its parts are not the message that was held");
    // A part missing.
    state.db.query("DELETE FROM sealed WHERE kind = ? AND id = ?").run(HELD_PART_KIND, `${b.id}.2`);
    await expect(store.readMessage(b.id)).rejects.toThrow("part 2 is missing");
    // The details still open: approvers can see what it was, and deny it.
    expect(store.details(b.id)!.envelope.from).toBe("a@x.test");
  } finally {
    state.close();
  }
});

test("the parts go with the message: decided, expired or withdrawn", async () => {
  const { store, state } = open();
  try {
    const size = 2 * HELD_PART_BYTES;
    const denied = await store.hold(heldOf(size), RULE, LATER);
    expect(store.deny(denied.id, "boss", null)).toBe("held");
    const expired = await store.hold(heldOf(size), RULE, Date.now() + 1);
    expect(store.expireDue(Date.now() + 10).map((r) => r.id)).toEqual([expired.id]);
    const sent = await store.hold(heldOf(size), RULE, LATER);
    expect(store.claim(sent.id, "boss").ok).toBe(true);
    // Withdrawn only while held: not once an approver claimed it.
    expect(store.withdraw(sent.id)).toBe(false);
    store.sent(sent.id, true, "250 ok");
    const withdrawn = await store.hold(heldOf(size), RULE, LATER);
    expect(store.withdraw(withdrawn.id)).toBe(true);
    expect(store.row(withdrawn.id)).toBeNull();
    for (const id of [denied.id, expired.id, sent.id, withdrawn.id]) {
      expect(partIds(state, id)).toEqual([]);
      expect(await store.readMessage(id)).toBeNull();
    }
  } finally {
    state.close();
  }
});

test("a store that fails or is stopped leaves no part; a stopped process's parts go at the next start", async () => {
  const { store, state } = open();
  try {
    const kept = await store.hold(heldOf(2 * HELD_PART_BYTES), RULE, LATER);
    const ids = ["f", "a", "b", "c"].map((c) => c.repeat(32));
    // The last step fails as a full disk would.
    state.db.run("CREATE TRIGGER refuse BEFORE INSERT ON approvals BEGIN SELECT RAISE(ABORT, 'disk full'); END");
    await expect(store.hold(heldOf(3 * HELD_PART_BYTES), RULE, LATER, Date.now(), ids[0])).rejects.toThrow("disk full");
    state.db.run("DROP TRIGGER refuse");
    // A part's own commit fails after others were stored; then a part removed while the rest are stored.
    const put = state.put.bind(state);
    let puts = 0;
    state.put = (kind, id, plaintext) => {
      if (kind === HELD_PART_KIND && id.startsWith(ids[1]!) && ++puts === 2) throw new Error("disk full at part 1");
      put(kind, id, plaintext);
      if (kind === HELD_PART_KIND && id === `${ids[2]}.1`) state.delete(HELD_PART_KIND, `${ids[2]}.0`);
    };
    await expect(store.hold(heldOf(3 * HELD_PART_BYTES), RULE, LATER, Date.now(), ids[1])).rejects.toThrow(
      "disk full at part 1",
    );
    await expect(store.hold(heldOf(3 * HELD_PART_BYTES), RULE, LATER, Date.now(), ids[2])).rejects.toThrow(
      "a part was removed while it was stored",
    );
    state.put = put;
    // Stopped by its caller after the first part: HoldStopped, and nothing left.
    let parts = 0;
    const stopped = store.hold(heldOf(3 * HELD_PART_BYTES), RULE, LATER, Date.now(), ids[3], () => ++parts > 1);
    await expect(stopped).rejects.toBeInstanceOf(HoldStopped);
    for (const id of ids) {
      expect(partIds(state, id)).toEqual([]);
      expect(store.row(id)).toBeNull();
    }
    // Only ids of 32 hex digits: the parts are found by them.
    await expect(store.hold(heldOf(100), RULE, LATER, Date.now(), "x".repeat(32))).rejects.toThrow("not 32 hex");
    // Parts that no held message names, as a process that stopped between the parts and the last step leaves them.
    state.put(HELD_PART_KIND, `${"e".repeat(32)}.0`, Buffer.from("orphan"));
    state.put(HELD_PART_KIND, `${"e".repeat(32)}.1`, Buffer.from("orphan"));
    state.put(HELD_PART_KIND, `${"d".repeat(32)}.0`, Buffer.from("orphan"));
    // Younger than ORPHAN_PART_AGE_MS: they may be a store under way (another process's), so they stay.
    expect(store.removeOrphanParts()).toEqual([]);
    expect(partIds(state, "e".repeat(32))).toHaveLength(2);
    // Older: removed, unless the newest part of the message is young.
    state.db
      .query("UPDATE sealed SET updated = ? WHERE kind = ?")
      .run(Date.now() - ORPHAN_PART_AGE_MS - 1, HELD_PART_KIND);
    state.put(HELD_PART_KIND, `${"d".repeat(32)}.1`, Buffer.from("orphan"));
    expect(store.removeOrphanParts()).toEqual(["e".repeat(32)]);
    expect(partIds(state, "e".repeat(32))).toEqual([]);
    expect(partIds(state, "d".repeat(32))).toHaveLength(2);
    expect(store.removeOrphanParts(Date.now() + 1)).toEqual(["d".repeat(32)]);
    expect(partIds(state, kept.id)).toHaveLength(2);
    expect(await store.readMessage(kept.id)).not.toBeNull();
    expect(store.removeOrphanParts(Date.now() + 1)).toEqual([]);
    // Never the parts of a message this store is storing now, however old they look.
    const storing = "9".repeat(32);
    let during: string[] | null = null;
    state.put = (kind, id, plaintext) => {
      put(kind, id, plaintext);
      if (id === `${storing}.1`) during = store.removeOrphanParts(Date.now() + 1);
    };
    await store.hold(heldOf(3 * HELD_PART_BYTES), RULE, LATER, Date.now(), storing);
    state.put = put;
    expect(during!).toEqual([]);
    expect(await store.readMessage(storing)).not.toBeNull();
  } finally {
    state.close();
  }
});

test("a record written before parts (the bytes in it, base64) still reads, and is wiped when decided", async () => {
  const { store, state } = open();
  try {
    const { message, ...details } = heldOf(5000);
    const id = "d".repeat(32);
    const now = Date.now();
    state.transaction(() => {
      state.put(HELD_KIND, id, JSON.stringify({ ...details, message: message.toString("base64") }));
      state.db
        .query(
          "INSERT INTO approvals (id, state, created, expires, sha256, rule, rule_index, groups, agent, updated) " +
            "VALUES (?, 'held', ?, ?, 'x', 'hold', 0, '[]', 'bot', ?)",
        )
        .run(id, now, LATER, now);
    });
    expect((await store.readMessage(id))!.message.equals(message)).toBe(true);
    expect("message" in store.details(id)!).toBe(false);
    expect(store.details(id)!.preview).toEqual(details.preview);
    expect(store.deny(id, "boss", null)).toBe("held");
    expect(await store.readMessage(id)).toBeNull();
  } finally {
    state.close();
  }
});
