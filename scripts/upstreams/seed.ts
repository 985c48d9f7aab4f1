/**
 * Mailbox seeder: writes N generated messages straight into a Maildir (the fastest way to get
 * 100,000 messages into Dovecot) and returns a manifest of what each UID holds, so tests
 * compute expected results from the manifest instead of hard-coding them.
 *
 * Deterministic: the same seed, owner and counts give the same messages, byte for byte.
 * The mix: senders from notifications@shop.test, boss@corp.test, spam@evil.test,
 * alice@friends.test, a display-name trick ("notifications@shop.test" <spam@evil.test>), an
 * encoded-word trick (a display name that decodes to boss@corp.test) and an encoded-word
 * name; To/Cc sets including a group; plain and encoded-word subjects; some multipart/mixed
 * messages with a base64 attachment; Maildir flags.
 *
 * UIDs: files are named `<10-digit number>.M<n>P<seed>.mailgator,S=<size>,W=<vsize>:2,<flags>`
 * in `cur/`, and the seeder writes Dovecot's `dovecot-uidlist` itself, so message i of a
 * folder has UID first+i whatever touches the folder next (left to itself, Dovecot gives
 * file-name order, but a mail delivered over LMTP before the first sync would take UID 1).
 * `first` is 1 for a folder Dovecot has never seen, else the next UID of its uidlist.
 * Seeding into a folder that still holds messages is refused: it would race with Dovecot over
 * the uidlist, and which UIDs the old messages have is not ours to predict.
 *
 * CLI:
 *   bun scripts/upstreams/seed.ts (--user ADDRESS [--dir D] | --maildir PATH)
 *     [--count N | --folder NAME=N ...] [--seed S] [--owner ADDRESS] [--manifest FILE]
 */
import { randomBytes } from "node:crypto";
import { chownSync, existsSync, readdirSync, readFileSync, renameSync, utimesSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { MAIL_UID } from "./layout.ts";
import { ensureFolder } from "./users.ts";

export interface SeedOptions {
  /**
   * Messages per folder, e.g. `{ INBOX: 500, "Archive/2025": 200 }`. Default: `count` spread over INBOX,
   * Archive/2025, Archive/2026, Sent, Drafts, Trash, Junk.
   */
  readonly folders?: Readonly<Record<string, number>>;
  /** Total number of messages when `folders` is not given (default 100). */
  readonly count?: number;
  /** PRNG seed (default 1). */
  readonly seed?: number;
  /** Address of the mailbox owner: To of received mail, From of Sent and Drafts (default me@mailgator.test). */
  readonly owner?: string;
  /** Share of messages with an attachment, 0..1 (default 0.2). */
  readonly attachmentRatio?: number;
}

/** What one seeded message holds, as an IMAP client sees it. Addresses are lower-case addr-specs. */
export interface SeededMessage {
  readonly uid: number;
  /** addr-spec of the From address (never the display name). */
  readonly from: string;
  /** Display name of From, decoded ("" when none). */
  readonly fromName: string;
  /** The From header exactly as written. */
  readonly fromHeader: string;
  /** addr-specs of To (group members included, group names not). */
  readonly to: readonly string[];
  readonly cc: readonly string[];
  /** Decoded subject. */
  readonly subject: string;
  readonly messageId: string;
  /** Date header and INTERNALDATE (file mtime), ISO 8601. */
  readonly date: string;
  readonly hasAttachment: boolean;
  /** IMAP system flags in Dovecot's order (\\Answered \\Flagged \\Deleted \\Seen \\Draft). */
  readonly flags: readonly string[];
  /** RFC822.SIZE: size with CRLF line ends. */
  readonly size: number;
}

export interface SeedManifest {
  readonly seed: number;
  readonly owner: string;
  /** Per folder, messages in UID order. */
  readonly folders: Readonly<Record<string, readonly SeededMessage[]>>;
}

/** The folders and shares used when only a count is given. */
export const DEFAULT_MIX: Readonly<Record<string, number>> = {
  INBOX: 0.5,
  "Archive/2025": 0.15,
  "Archive/2026": 0.1,
  Sent: 0.1,
  Drafts: 0.05,
  Trash: 0.05,
  Junk: 0.05,
};

interface Sender {
  readonly header: string;
  readonly address: string;
  readonly name: string;
  readonly weight: number;
  readonly subjects: readonly string[];
}

const SENDERS: readonly Sender[] = [
  {
    header: "Shop Notifications <notifications@shop.test>",
    address: "notifications@shop.test",
    name: "Shop Notifications",
    weight: 30,
    subjects: ["Your order #{n} has shipped", "Receipt for order #{n}", "Password reset code {n}"],
  },
  {
    header: "Pat Boss <boss@corp.test>",
    address: "boss@corp.test",
    name: "Pat Boss",
    weight: 20,
    subjects: ["Q3 planning, item {n}", "Re: budget review {n}", "Please sign contract {n}"],
  },
  {
    header: "spam@evil.test",
    address: "spam@evil.test",
    name: "",
    weight: 12,
    subjects: ["You won a prize ({n})!!!", "Verify your account {n} now"],
  },
  {
    header: "Alice Friend <alice@friends.test>",
    address: "alice@friends.test",
    name: "Alice Friend",
    weight: 15,
    subjects: ["Lunch on day {n}?", "Photos from the trip ({n})"],
  },
  // The name looks like an allowed sender; rules must match the addr-spec, not the name.
  {
    header: '"notifications@shop.test" <spam@evil.test>',
    address: "spam@evil.test",
    name: "notifications@shop.test",
    weight: 8,
    subjects: ["Your order #{n} has shipped", "Action required: invoice {n}"],
  },
  // An encoded-word name (RFC 2047) that decodes to "boss@corp.test".
  {
    header: "=?UTF-8?B?Ym9zc0Bjb3JwLnRlc3Q=?= <spam@evil.test>",
    address: "spam@evil.test",
    name: "boss@corp.test",
    weight: 5,
    subjects: ["Urgent wire transfer {n}"],
  },
  {
    header: "=?UTF-8?Q?Andr=C3=A9_M=C3=BCller?= <andre@friends.test>",
    address: "andre@friends.test",
    name: "André Müller",
    weight: 10,
    subjects: ["=?UTF-8?Q?Caf=C3=A9_on_Friday_{n}?=", "Re: the book {n}"],
  },
];

const CC_POOL = ["carol@corp.test", "dave@partner.test", "alice@friends.test", "eve@corp.test"] as const;
const CONTACTS = [
  "boss@corp.test",
  "alice@friends.test",
  "carol@corp.test",
  "orders@shop.test",
  "dave@partner.test",
] as const;

/** mulberry32: small, fast, good enough for test data, same sequence everywhere. */
export function prng(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** `prng(seed)` as whole numbers: each call `random(n)` gives one in [0, n). For the property tests too. */
export function prngBelow(seed: number): (n: number) => number {
  const next = prng(seed);
  return (n) => Math.floor(next() * n);
}

function pick<T extends { readonly weight: number }>(items: readonly T[], random: () => number): T {
  const total = items.reduce((sum, item) => sum + item.weight, 0);
  let point = random() * total;
  for (const item of items) {
    point -= item.weight;
    if (point < 0) return item;
  }
  return items[items.length - 1] as T;
}

function choose<T>(items: readonly T[], random: () => number): T {
  return items[Math.floor(random() * items.length)] as T;
}

/** Decodes the encoded words this seeder writes (UTF-8, B or Q). */
function decodeWords(text: string): string {
  return text.replace(/=\?UTF-8\?([BQ])\?([^?]*)\?=/gi, (_, encoding: string, data: string) =>
    encoding.toUpperCase() === "B"
      ? Buffer.from(data, "base64").toString("utf8")
      : Buffer.from(
          data
            .replace(/_/g, " ")
            .replace(/=([0-9A-F]{2})/gi, (__, hex: string) => String.fromCharCode(parseInt(hex, 16))),
          "latin1",
        ).toString("utf8"),
  );
}

/** RFC 5322 date, e.g. "Thu, 01 Jan 2026 10:00:00 +0000". */
function rfc5322Date(date: Date): string {
  return date.toUTCString().replace("GMT", "+0000");
}

const ATTACHMENT_SOURCE = (() => {
  const random = prng(0x5eed);
  const bytes = new Uint8Array(6144);
  for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(random() * 256);
  return bytes;
})();

function base64Lines(bytes: Uint8Array): string {
  const encoded = Buffer.from(bytes).toString("base64");
  const lines: string[] = [];
  for (let i = 0; i < encoded.length; i += 76) lines.push(encoded.slice(i, i + 76));
  return lines.join("\n");
}

/** Year in a folder name ("Archive/2025") sets the dates of its messages; otherwise 2026. */
function folderStart(folder: string): number {
  const year = /(?:^|\/)(\d{4})$/.exec(folder)?.[1];
  return Date.UTC(year === undefined ? 2026 : Number(year), 0, 1, 8, 0, 0);
}

function slug(folder: string): string {
  return folder.toLowerCase().replace(/[^a-z0-9]+/g, "-");
}

function isOutgoing(folder: string): boolean {
  return folder === "Sent" || folder === "Drafts";
}

interface Generated {
  readonly text: string;
  readonly message: SeededMessage;
  readonly letters: string;
  readonly mtime: Date;
}

function generate(
  folder: string,
  index: number,
  uid: number,
  count: number,
  seed: number,
  owner: string,
  attachmentRatio: number,
  random: () => number,
): Generated {
  const n = index + 1;
  const outgoing = isOutgoing(folder);
  const sender = outgoing ? undefined : pick(SENDERS, random);
  const fromHeader = sender?.header ?? `Me <${owner}>`;
  const subjectRaw = (
    sender === undefined
      ? choose(["Re: planning {n}", "Notes {n}", "Draft reply {n}"], random)
      : choose(sender.subjects, random)
  ).replace("{n}", String(n));

  let toHeader: string;
  let to: string[];
  if (outgoing) {
    const first = choose(CONTACTS, random);
    to = [first];
    toHeader = first;
  } else if (random() < 0.05) {
    // A group (RFC 5322 §3.4): its members are recipients, its name is not an address.
    to = ["carol@corp.test", owner];
    toHeader = `Team: carol@corp.test, ${owner};`;
    // biome-ignore lint/suspicious/noDuplicateElseIf: each branch draws a new random number
  } else if (random() < 0.05) {
    to = [];
    toHeader = "undisclosed-recipients:;";
  } else {
    to = [owner];
    toHeader = `Me <${owner}>`;
    if (random() < 0.2) {
      const other = choose(CONTACTS, random);
      to.push(other);
      toHeader += `, ${other}`;
    }
  }
  const cc: string[] = [];
  if (random() < 0.25) {
    cc.push(choose(CC_POOL, random));
    if (random() < 0.3) {
      const second = choose(CC_POOL, random);
      if (!cc.includes(second)) cc.push(second);
    }
  }

  const start = folderStart(folder);
  // Spread over the year (or less) in UID order; whole seconds.
  const step = Math.max(1, Math.floor((364 * 86400) / Math.max(count, 1)));
  const date = new Date(start + index * step * 1000);
  const messageId = `<${slug(folder)}.${n}.s${seed}@seed.mailgator.test>`;
  const hasAttachment = random() < attachmentRatio;

  const letters = flagLetters(folder, random);
  const headers = [
    `Return-Path: <${sender?.address ?? owner}>`,
    `Date: ${rfc5322Date(date)}`,
    `From: ${fromHeader}`,
    `To: ${toHeader}`,
    ...(cc.length > 0 ? [`Cc: ${cc.join(", ")}`] : []),
    `Subject: ${subjectRaw}`,
    `Message-ID: ${messageId}`,
    "MIME-Version: 1.0",
  ];
  const bodyText =
    `Hello,\n\nThis is seeded message ${n} in ${folder} (seed ${seed}).\n` +
    `Nothing here is real.\n\n-- \nMailgator seeder\n`;
  let text: string;
  if (hasAttachment) {
    const boundary = `=_mailgator_${seed}_${n}`;
    const length = 512 + Math.floor(random() * 3584);
    const offset = Math.floor(random() * (ATTACHMENT_SOURCE.length - length));
    text =
      `${headers.join("\n")}\nContent-Type: multipart/mixed; boundary="${boundary}"\n\n` +
      `This is a multi-part message in MIME format.\n\n` +
      `--${boundary}\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 7bit\n\n${bodyText}\n` +
      `--${boundary}\nContent-Type: application/pdf; name="report-${n}.pdf"\n` +
      `Content-Disposition: attachment; filename="report-${n}.pdf"\nContent-Transfer-Encoding: base64\n\n` +
      `${base64Lines(ATTACHMENT_SOURCE.subarray(offset, offset + length))}\n--${boundary}--\n`;
  } else {
    text =
      `${headers.join("\n")}\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 7bit\n\n` +
      `${bodyText}`;
  }
  let lineFeeds = 0;
  for (let i = text.indexOf("\n"); i !== -1; i = text.indexOf("\n", i + 1)) lineFeeds++;
  const message: SeededMessage = {
    uid,
    from: (sender?.address ?? owner).toLowerCase(),
    fromName: sender === undefined ? "Me" : sender.name,
    fromHeader,
    to,
    cc,
    subject: decodeWords(subjectRaw),
    messageId,
    date: date.toISOString(),
    hasAttachment,
    flags: FLAG_ORDER.filter((flag) => letters.includes(FLAG_LETTERS[flag] as string)),
    size: text.length + lineFeeds,
  };
  return { text, message, letters, mtime: date };
}

/** Maildir info letters (must be in ASCII order) and the IMAP flags they stand for. */
const FLAG_LETTERS: Readonly<Record<string, string>> = {
  "\\Draft": "D",
  "\\Flagged": "F",
  "\\Answered": "R",
  "\\Seen": "S",
  "\\Deleted": "T",
};
/** The order Dovecot lists system flags in (its flag bits). */
const FLAG_ORDER = ["\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft"] as const;

function flagLetters(folder: string, random: () => number): string {
  let letters = "";
  if (folder === "Drafts") letters += "D";
  if (random() < 0.1) letters += "F";
  if (random() < 0.1) letters += "R";
  if (folder === "Sent" || random() < 0.6) letters += "S";
  return letters;
}

interface UidlistHeader {
  readonly validity: number;
  readonly next: number;
  readonly guid: string;
}

/** The uidlist header to continue from (a fresh one for a folder Dovecot has not seen). */
function uidlistHeader(path: string, folder: string): UidlistHeader {
  for (const sub of ["cur", "new"]) {
    const names = readdirSync(join(path, sub));
    if (names.length > 0) {
      throw new Error(
        `seed: folder "${folder}" already holds ${names.length}+ messages (${join(path, sub)}); seed ` +
          `only into empty folders`,
      );
    }
  }
  const uidlist = join(path, "dovecot-uidlist");
  const fresh = { validity: Math.floor(Date.now() / 1000), next: 1, guid: randomBytes(16).toString("hex") };
  if (!existsSync(uidlist)) return fresh;
  // Header (version 3): "3 V<uidvalidity> N<next uid> G<mailbox guid>" (Dovecot's maildir docs).
  const header = readFileSync(uidlist, "utf8").split("\n")[0] ?? "";
  const field = (key: string) => new RegExp(`\\b${key}(\\w+)`).exec(header)?.[1];
  return {
    validity: Number(field("V") ?? fresh.validity),
    next: Number(field("N") ?? 1),
    guid: field("G") ?? fresh.guid,
  };
}

/** Writes dovecot-uidlist (version 3) listing the seeded files; replaced atomically by rename. */
function writeUidlist(path: string, header: UidlistHeader, baseNames: readonly string[], asRoot: boolean): void {
  const lines = [`3 V${header.validity} N${header.next + baseNames.length} G${header.guid}`];
  for (let i = 0; i < baseNames.length; i++) lines.push(`${header.next + i} :${baseNames[i]}`);
  const temporary = join(path, `dovecot-uidlist.seed-${process.pid}`);
  writeFileSync(temporary, `${lines.join("\n")}\n`, { mode: 0o600 });
  if (asRoot) chownSync(temporary, MAIL_UID, MAIL_UID);
  renameSync(temporary, join(path, "dovecot-uidlist"));
}

/** Messages per folder for a total `count` spread by DEFAULT_MIX (remainder to INBOX). */
export function spread(count: number): Record<string, number> {
  const folders: Record<string, number> = {};
  let assigned = 0;
  for (const [folder, share] of Object.entries(DEFAULT_MIX)) {
    if (folder === "INBOX") continue;
    folders[folder] = Math.floor(count * share);
    assigned += folders[folder];
  }
  return { INBOX: count - assigned, ...folders };
}

/**
 * Writes the messages into `maildir` (a user's Maildir root; folders are created when
 * missing) and returns the manifest. The caller must be root or the mail uid.
 */
export function seedMaildir(maildir: string, options: SeedOptions = {}): SeedManifest {
  const seed = options.seed ?? 1;
  const owner = (options.owner ?? "me@mailgator.test").toLowerCase();
  const attachmentRatio = options.attachmentRatio ?? 0.2;
  const plan = options.folders ?? spread(options.count ?? 100);
  const asRoot = process.getuid?.() === 0;
  const folders: Record<string, SeededMessage[]> = {};
  let folderNumber = 0;
  for (const [folder, count] of Object.entries(plan)) {
    folderNumber++;
    if (!Number.isInteger(count) || count < 0)
      throw new Error(`seed: folder "${folder}": count must be a whole number, got ${count}`);
    const path = ensureFolder(maildir, folder);
    const header = uidlistHeader(path, folder);
    const first = header.next;
    const baseNames: string[] = [];
    // One stream per folder: adding a folder to the plan does not change the others.
    const random = prng((seed * 1_000_003 + hash(folder)) >>> 0);
    const messages: SeededMessage[] = [];
    const cur = join(path, "cur");
    for (let index = 0; index < count; index++) {
      const generated = generate(folder, index, first + index, count, seed, owner, attachmentRatio, random);
      const size = generated.text.length;
      const baseName =
        `${1_000_000_000 + first + index}.M${index}P${seed}F${folderNumber}.mailgator,` +
        `S=${size},W=${generated.message.size}`;
      baseNames.push(baseName);
      const file = join(cur, `${baseName}:2,${generated.letters}`);
      writeFileSync(file, generated.text);
      if (asRoot) chownSync(file, MAIL_UID, MAIL_UID);
      utimesSync(file, generated.mtime, generated.mtime);
      messages.push(generated.message);
    }
    writeUidlist(path, header, baseNames, asRoot);
    folders[folder] = messages;
  }
  return { seed, owner, folders };
}

function hash(text: string): number {
  let value = 2166136261;
  for (let i = 0; i < text.length; i++) value = Math.imul(value ^ text.charCodeAt(i), 16777619);
  return value >>> 0;
}

const USAGE =
  "usage: bun scripts/upstreams/seed.ts (--user ADDRESS [--dir D] | --maildir PATH) " +
  "[--count N | --folder NAME=N ...] [--seed S] [--owner ADDRESS] [--manifest FILE]";

/** The command line's options, each checked: an unknown flag, a missing value or a bad number is an error. */
export interface SeedArguments {
  readonly user?: string;
  readonly dir?: string;
  readonly maildir?: string;
  readonly options: SeedOptions;
  readonly manifest?: string;
}

/**
 * Parses the CLI's arguments. `--count` spreads a total over the default folders and `--folder` names each folder's
 * count, so the two together are refused rather than one of them ignored.
 */
export function seedArguments(args: readonly string[]): SeedArguments {
  const single = new Map<string, string>();
  const folders: [string, number][] = [];
  const whole = (flag: string, text: string): number => {
    if (!/^\d+$/.test(text)) throw new Error(`${flag} takes a whole number, got "${text}"`);
    return Number(text);
  };
  for (let i = 0; i < args.length; i += 2) {
    const flag = args[i] as string;
    const text = args[i + 1];
    if (text === undefined || text.startsWith("--")) throw new Error(`${flag} needs a value`);
    if (flag === "--folder") {
      const at = text.lastIndexOf("=");
      if (at <= 0) throw new Error(`--folder takes NAME=N, got "${text}"`);
      const name = text.slice(0, at);
      if (folders.some(([n]) => n === name)) throw new Error(`--folder ${name} given twice`);
      folders.push([name, whole("--folder", text.slice(at + 1))]);
      continue;
    }
    if (!["--user", "--dir", "--maildir", "--count", "--seed", "--owner", "--manifest"].includes(flag))
      throw new Error(`unknown option "${flag}"`);
    if (single.has(flag)) throw new Error(`${flag} given twice`);
    single.set(flag, text);
  }
  const user = single.get("--user");
  const maildir = single.get("--maildir");
  if ((user === undefined) === (maildir === undefined)) throw new Error("give one of --user and --maildir");
  if (maildir !== undefined && single.has("--dir")) throw new Error("--dir goes with --user, not --maildir");
  const count = single.get("--count");
  if (count !== undefined && folders.length > 0) throw new Error("give --count or --folder, not both");
  const seed = single.get("--seed");
  const owner = single.get("--owner") ?? user;
  const options: SeedOptions = {
    ...(folders.length === 0 ? {} : { folders: Object.fromEntries(folders) }),
    ...(count === undefined ? {} : { count: whole("--count", count) }),
    ...(seed === undefined ? {} : { seed: whole("--seed", seed) }),
    ...(owner === undefined ? {} : { owner }),
  };
  const dir = single.get("--dir");
  const manifest = single.get("--manifest");
  return {
    ...(user === undefined ? {} : { user }),
    ...(dir === undefined ? {} : { dir }),
    ...(maildir === undefined ? {} : { maildir }),
    options,
    ...(manifest === undefined ? {} : { manifest }),
  };
}

if (import.meta.main) {
  let parsed: SeedArguments;
  try {
    parsed = seedArguments(process.argv.slice(2));
  } catch (error) {
    console.error(`seed: ${(error as Error).message}\n${USAGE}`);
    process.exit(2);
  }
  let maildir = parsed.maildir;
  if (maildir === undefined && parsed.user !== undefined) {
    const { layout, userMaildir } = await import("./layout.ts");
    maildir = userMaildir(layout(parsed.dir).maildirRoot, parsed.user);
  }
  const started = performance.now();
  const manifest = seedMaildir(maildir as string, parsed.options);
  const seconds = (performance.now() - started) / 1000;
  if (parsed.manifest !== undefined) writeFileSync(parsed.manifest, JSON.stringify(manifest));
  const total = Object.values(manifest.folders).reduce((sum, list) => sum + list.length, 0);
  const perFolder = Object.entries(manifest.folders)
    .map(([folder, list]) => `${folder}=${list.length}`)
    .join(" ");
  console.error(`seed: ${total} messages into ${maildir} in ${seconds.toFixed(2)} s (${perFolder})`);
}
