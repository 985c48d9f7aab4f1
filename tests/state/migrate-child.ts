// Child process of tests/state/concurrent-migration.test.ts: another mailgator migrating the state database at
// argv[2] at the same moment. It creates the database in WAL mode, takes the write lock (BEGIN IMMEDIATE), creates
// the `sealed` table and sets user_version 1 as migration 1 of src/state/store.ts does, prints "locked", and commits
// a second later.
import { Database } from "bun:sqlite";

const db = new Database(process.argv[2]!, { create: true, readwrite: true });
db.run("PRAGMA journal_mode = WAL");
db.run("BEGIN IMMEDIATE");
db.run(`CREATE TABLE sealed (
     kind    TEXT NOT NULL,
     id      TEXT NOT NULL,
     nonce   BLOB NOT NULL,
     box     BLOB NOT NULL,
     updated INTEGER NOT NULL,
     PRIMARY KEY (kind, id)
   ) WITHOUT ROWID`);
db.run("PRAGMA user_version = 1");
console.log("locked");
await Bun.sleep(1000);
db.run("COMMIT");
db.close();
