// Sealed records (src/state/store.ts) and their key (src/state/key.ts).
import { describe, expect, test } from "bun:test";
import { chmodSync, existsSync, mkdtempSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { SecretsKeyError } from "../../src/state/key.ts";
import { SealedRecordError, SealedStore } from "../../src/state/store.ts";
import { tempRoot } from "../fixtures/temp.ts";

/** Every folder this file makes is in here, removed after its tests. */
const TMP = tempRoot("mg-state-");

function place() {
  const dir = mkdtempSync(join(TMP, "mg-state-"));
  return { dir, db: join(dir, "state.db"), secretsFile: join(dir, "secrets.key") };
}

function openStore(p: ReturnType<typeof place>, env: Record<string, string> = {}, create = true) {
  return SealedStore.open(p.db, { secretsFile: p.secretsFile, env, create });
}

describe("sealed records", () => {
  test("round trip; the plaintext is nowhere in the files; every file is 0600 under umask 0", () => {
    const p = place();
    const old = process.umask(0);
    try {
      const store = openStore(p)!;
      const secret = "refresh-token-PLAINTEXT-4711";
      store.put("oauth2-token", "main", secret);
      expect(store.getText("oauth2-token", "main")).toBe(secret);
      for (const name of ["state.db", "state.db-wal", "state.db-shm", "secrets.key"]) {
        const path = join(p.dir, name);
        expect(existsSync(path)).toBe(true);
        expect(statSync(path).mode & 0o777).toBe(0o600);
        expect(readFileSync(path).includes(secret)).toBe(false);
      }
      store.close();
    } finally {
      process.umask(old);
    }
  });

  test("each record gets its own nonce: the same plaintext seals differently", () => {
    const store = openStore(place())!;
    store.put("k", "a", "same");
    store.put("k", "b", "same");
    const rows = store.db.query("SELECT nonce, box FROM sealed WHERE kind = 'k'").all() as {
      nonce: Uint8Array;
      box: Uint8Array;
    }[];
    expect(Buffer.compare(rows[0]!.nonce, rows[1]!.nonce)).not.toBe(0);
    expect(Buffer.compare(rows[0]!.box, rows[1]!.box)).not.toBe(0);
  });

  test("a record moved to another id or kind, or altered, does not open", () => {
    const store = openStore(place())!;
    store.put("oauth2-token", "alice", "alice's token");
    store.db.run("UPDATE sealed SET id = 'mallory' WHERE id = 'alice'");
    expect(() => store.get("oauth2-token", "mallory")).toThrow(SealedRecordError);
    store.db.run("UPDATE sealed SET id = 'alice', kind = 'held-message' WHERE id = 'mallory'");
    expect(() => store.get("held-message", "alice")).toThrow(SealedRecordError);
    store.put("oauth2-token", "bob", "bob's token");
    store.db.run("UPDATE sealed SET box = zeroblob(length(box)) WHERE id = 'bob'");
    expect(() => store.get("oauth2-token", "bob")).toThrow(SealedRecordError);
    expect(store.get("oauth2-token", "nobody")).toBeNull();
  });

  test("a transaction replaces a record and its companion row together or not at all", () => {
    const store = openStore(place())!;
    store.db.run("CREATE TABLE companion (v TEXT)");
    store.put("k", "a", "old");
    expect(() =>
      store.transaction(() => {
        store.put("k", "a", "new");
        store.db.run("INSERT INTO companion VALUES ('x')");
        throw new Error("crash");
      }),
    ).toThrow("crash");
    expect(store.getText("k", "a")).toBe("old");
    expect(store.db.query("SELECT count(*) AS n FROM companion").get()).toEqual({ n: 0 });
  });
});

describe("the secrets key", () => {
  test("created 0600 on first use, 32 bytes in base64, reused after", () => {
    const p = place();
    openStore(p)!.close();
    const text = readFileSync(p.secretsFile, "utf8");
    expect(Buffer.from(text.trim(), "base64").length).toBe(32);
    expect(statSync(p.secretsFile).mode & 0o777).toBe(0o600);
    const store = openStore(p)!;
    store.put("k", "a", "v");
    store.close();
    expect(openStore(p)!.getText("k", "a")).toBe("v");
    expect(readFileSync(p.secretsFile, "utf8")).toBe(text);
  });

  test("from MAILGATOR_SECRETS_KEY: no file is written; a malformed value is refused", () => {
    const p = place();
    const key = Buffer.alloc(32, 1).toString("base64");
    openStore(p, { MAILGATOR_SECRETS_KEY: key })!.put("k", "a", "v");
    expect(existsSync(p.secretsFile)).toBe(false);
    expect(openStore(p, { MAILGATOR_SECRETS_KEY: key })!.getText("k", "a")).toBe("v");
    const short = Buffer.alloc(31, 1).toString("base64");
    expect(() => openStore(place(), { MAILGATOR_SECRETS_KEY: short })).toThrow(SecretsKeyError);
    expect(() => openStore(place(), { MAILGATOR_SECRETS_KEY: "not base64!" })).toThrow(/32 bytes in base64/);
  });

  test("a wrong key is an error naming the database, not a fresh start", () => {
    const p = place();
    openStore(p)!.close();
    writeFileSync(p.secretsFile, `${Buffer.alloc(32, 9).toString("base64")}\n`, { mode: 0o600 });
    expect(() => openStore(p)).toThrow(/is not the one that sealed/);
  });

  test("a missing key while sealed records exist is an error, and no new key is made", () => {
    const p = place();
    openStore(p)!.close();
    Bun.spawnSync(["rm", p.secretsFile]);
    expect(() => openStore(p)).toThrow(/is missing/);
    expect(existsSync(p.secretsFile)).toBe(false);
  });

  test("a key file readable by others is refused", () => {
    const p = place();
    openStore(p)!.close();
    chmodSync(p.secretsFile, 0o644);
    expect(() => openStore(p)).toThrow(/chmod 600/);
  });

  test("a key file that is a FIFO is refused at once, not read (it would block)", () => {
    const p = place();
    openStore(p)!.close();
    Bun.spawnSync(["rm", p.secretsFile]);
    Bun.spawnSync(["mkfifo", "-m", "600", p.secretsFile]);
    expect(() => openStore(p, {}, false)).toThrow(/is not a regular file/);
  });

  test("read-only use without a database creates nothing", () => {
    const p = place();
    expect(openStore(p, {}, false)).toBeNull();
    expect(existsSync(p.db)).toBe(false);
    expect(existsSync(p.secretsFile)).toBe(false);
  });
});
