/**
 * Structured commands and responses back to bytes, through an `Encoder`. What the
 * parsers return can be written again; what they report as unknown cannot (the proxy
 * drops it, docs/protocol.md §0.2), so writing it is a programming error.
 */
import type { CatenatePart, Command } from "./command.ts";
import { type Encoder, writeAstring, writeAtom, writeString } from "./encoder.ts";
import type { FetchItem } from "./fetch.ts";
import type { FetchAttr, NamespaceDescr, Response, ResponseCode } from "./response.ts";
import type { SearchKey } from "./search.ts";

/** Writes `tag SP command CRLF` (the tag is the caller's: proxy-owned tags upstream). */
export function writeCommand(enc: Encoder, cmd: Command): void {
  enc.atom(cmd.tag).sp();
  switch (cmd.name) {
    case "CAPABILITY":
    case "NOOP":
    case "LOGOUT":
    case "STARTTLS":
    case "IDLE":
    case "UNSELECT":
    case "CHECK":
    case "NAMESPACE":
    case "CLOSE":
      enc.atom(cmd.name);
      break;
    case "EXPUNGE":
      if (cmd.uid && cmd.set !== null) enc.atom("UID EXPUNGE").sp().seqSet(cmd.set);
      else enc.atom("EXPUNGE");
      break;
    case "ID":
      enc.atom("ID").sp();
      if (cmd.params === null) enc.nil();
      else enc.listWith(cmd.params, writeIdParam);
      break;
    case "ENABLE":
      enc.atom("ENABLE");
      for (const c of cmd.capabilities) enc.sp().atom(c);
      break;
    case "COMPRESS":
      enc.atom("COMPRESS").sp().atom(cmd.mechanism);
      break;
    case "LOGIN":
      enc.atom("LOGIN").sp().astring(cmd.username).sp().astring(cmd.password);
      break;
    case "AUTHENTICATE":
      enc.atom("AUTHENTICATE").sp().atom(cmd.mechanism);
      if (cmd.initialResponse !== null) {
        enc.sp().atom(cmd.initialResponse.length === 0 ? "=" : Buffer.from(cmd.initialResponse).toString("base64"));
      }
      break;
    case "LIST":
    case "LSUB":
      writeListCommand(enc, cmd);
      break;
    case "SELECT":
    case "EXAMINE":
    case "CREATE":
    case "DELETE":
    case "SUBSCRIBE":
    case "UNSUBSCRIBE":
      enc.atom(cmd.name).sp().mailbox(cmd.mailbox);
      if (cmd.condstore === true) enc.raw(" (CONDSTORE)");
      break;
    case "STATUS":
      enc.atom("STATUS").sp().mailbox(cmd.mailbox).sp().listWith(cmd.items, writeAtom);
      break;
    case "RENAME":
      enc.atom("RENAME").sp().mailbox(cmd.mailbox).sp().mailbox(cmd.newName);
      break;
    case "FETCH":
      enc
        .atom(cmd.uid ? "UID FETCH" : "FETCH")
        .sp()
        .seqSet(cmd.set)
        .sp();
      enc.listWith(cmd.items, writeFetchItem);
      if (cmd.changedSince !== undefined) enc.raw(" (CHANGEDSINCE ").number(cmd.changedSince).byte(0x29);
      break;
    case "STORE":
      enc
        .atom(cmd.uid ? "UID STORE" : "STORE")
        .sp()
        .seqSet(cmd.set)
        .sp();
      if (cmd.unchangedSince !== undefined) enc.raw("(UNCHANGEDSINCE ").number(cmd.unchangedSince).raw(") ");
      enc.atom(`${cmd.action === "add" ? "+" : cmd.action === "remove" ? "-" : ""}FLAGS${cmd.silent ? ".SILENT" : ""}`);
      enc.sp().flagList(cmd.flags);
      break;
    case "COPY":
    case "MOVE":
      enc
        .atom(cmd.uid ? `UID ${cmd.name}` : cmd.name)
        .sp()
        .seqSet(cmd.set)
        .sp()
        .mailbox(cmd.mailbox);
      break;
    case "SEARCH":
      enc.atom(cmd.uid ? "UID SEARCH" : "SEARCH");
      if (cmd.returnOptions !== null) enc.sp().atom("RETURN").sp().listWith(cmd.returnOptions, writeAtom);
      if (cmd.charset !== null) enc.sp().atom("CHARSET").sp().astring(cmd.charset);
      for (const k of cmd.criteria) writeSearchKey(enc.sp(), k);
      break;
    case "SORT":
      enc.atom(cmd.uid ? "UID SORT" : "SORT").sp();
      if (cmd.returnOptions !== null) enc.atom("RETURN").sp().listWith(cmd.returnOptions, writeAtom).sp();
      enc.listWith(cmd.sortCriteria, writeSortCriterion);
      enc.sp().astring(cmd.charset);
      for (const k of cmd.criteria) writeSearchKey(enc.sp(), k);
      break;
    case "THREAD":
      enc
        .atom(cmd.uid ? "UID THREAD" : "THREAD")
        .sp()
        .atom(cmd.algorithm)
        .sp()
        .astring(cmd.charset);
      for (const k of cmd.criteria) writeSearchKey(enc.sp(), k);
      break;
    case "APPEND":
      enc.atom("APPEND").sp().mailbox(cmd.mailbox);
      for (const m of cmd.messages) {
        if (m.flags.length > 0) enc.sp().flagList(m.flags);
        if (m.date !== null) enc.sp().dateTime(m.date);
        if (m.catenate === null) enc.sp().literal(m.message, m.binary);
        else enc.sp().literalParts(assembledParts(m.catenate));
      }
      break;
  }
  enc.crlf();
}

export function writeFetchItem(enc: Encoder, item: FetchItem): void {
  switch (item.type) {
    case "BODY[]":
      enc.atom(item.peek ? "BODY.PEEK" : "BODY").section(item.section);
      if (item.partial !== null) enc.raw(`<${item.partial.offset}.${item.partial.count}>`);
      return;
    case "BINARY[]":
      enc.atom(item.peek ? "BINARY.PEEK" : "BINARY").sectionBinary(item.part);
      if (item.partial !== null) enc.raw(`<${item.partial.offset}.${item.partial.count}>`);
      return;
    case "BINARY.SIZE":
      enc.atom("BINARY.SIZE").sectionBinary(item.part);
      return;
    default:
      enc.atom(item.type);
  }
}

export function writeSearchKey(enc: Encoder, k: SearchKey): void {
  switch (k.key) {
    case "BCC":
    case "BODY":
    case "CC":
    case "FROM":
    case "SUBJECT":
    case "TEXT":
    case "TO":
      enc.atom(k.key).sp().astring(k.value);
      return;
    case "BEFORE":
    case "ON":
    case "SINCE":
    case "SENTBEFORE":
    case "SENTON":
    case "SENTSINCE":
      enc.atom(k.key).sp().date(k.date);
      return;
    case "KEYWORD":
    case "UNKEYWORD":
      enc.atom(k.key).sp().flag(k.flag);
      return;
    case "HEADER":
      enc.atom("HEADER").sp().astring(k.field).sp().astring(k.value);
      return;
    case "LARGER":
    case "SMALLER":
      enc.atom(k.key).sp().number(k.size);
      return;
    case "YOUNGER":
    case "OLDER":
      enc.atom(k.key).sp().number(k.seconds);
      return;
    case "MODSEQ":
      enc.atom("MODSEQ").sp();
      // entry-flag-name is a quoted string (RFC 7162 §7); the parser allowed atom characters and one `\` only.
      if (k.entry !== null)
        enc
          .raw(`"${k.entry.name.replace("\\", "\\\\")}" `)
          .atom(k.entry.type)
          .sp();
      enc.number(k.modseq);
      return;
    case "UID":
      enc.atom("UID").sp().seqSet(k.set);
      return;
    case "SEQ":
      enc.seqSet(k.set);
      return;
    case "NOT":
      writeSearchKey(enc.atom("NOT").sp(), k.operand);
      return;
    case "OR":
      writeSearchKey(enc.atom("OR").sp(), k.left);
      writeSearchKey(enc.sp(), k.right);
      return;
    case "AND":
      enc.listWith(k.operands, writeSearchKey);
      return;
    default:
      enc.atom(k.key);
  }
}

function writeCode(enc: Encoder, code: ResponseCode): void {
  if (!code.known) throw new Error(`imap-wire: unknown response code ${code.name} must be dropped, not written`);
  enc.byte(0x5b).atom(code.name);
  switch (code.name) {
    case "UIDNEXT":
    case "UIDVALIDITY":
    case "UNSEEN":
    case "HIGHESTMODSEQ":
      enc.sp().number(code.value);
      break;
    case "PERMANENTFLAGS":
      enc.sp().flagList(code.flags);
      break;
    case "CAPABILITY":
      for (const c of code.capabilities) enc.sp().atom(c);
      break;
    case "BADCHARSET":
      if (code.charsets.length > 0) enc.sp().listWith(code.charsets, writeAstring);
      break;
    case "APPENDUID":
      enc.sp().number(code.uidValidity).sp().seqSet(code.uids);
      break;
    case "COPYUID":
      enc.sp().number(code.uidValidity).sp().seqSet(code.source).sp().seqSet(code.destination);
      break;
    case "MODIFIED":
      enc.sp().seqSet(code.set);
      break;
  }
  enc.byte(0x5d);
}

export function writeFetchAttr(enc: Encoder, a: FetchAttr): void {
  switch (a.name) {
    case "FLAGS":
      enc.atom("FLAGS").sp().flagList(a.flags);
      return;
    case "UID":
    case "RFC822.SIZE":
      enc.atom(a.name).sp().number(a.value);
      return;
    case "MODSEQ":
      enc.raw("MODSEQ (").number(a.value).byte(0x29);
      return;
    case "INTERNALDATE":
      enc.atom("INTERNALDATE").sp().dateTime(a.date);
      return;
    case "ENVELOPE":
    case "BODYSTRUCTURE":
    case "BODY":
      enc.atom(a.name).sp().value(a.value);
      return;
    case "BODY[]":
      enc.atom("BODY").section(a.section);
      if (a.origin !== null) enc.raw(`<${a.origin}>`);
      writeBody(enc.sp(), a.data, false);
      return;
    case "BINARY[]":
      enc.atom("BINARY").sectionBinary(a.part);
      if (a.origin !== null) enc.raw(`<${a.origin}>`);
      writeBody(enc.sp(), a.data, true);
      return;
    case "BINARY.SIZE":
      enc.atom("BINARY.SIZE").sectionBinary(a.part).sp().number(a.value);
      return;
    case "RFC822":
    case "RFC822.HEADER":
    case "RFC822.TEXT":
      writeBody(enc.atom(a.name).sp(), a.data, false);
      return;
    case "unknown":
      throw new Error(`imap-wire: unknown FETCH item ${a.item} must be dropped, not written`);
  }
}

/**
 * LIST and LSUB, with LIST-EXTENDED's selection and return options (RFC 5258) and LIST-STATUS's items (RFC 5819):
 * apart, so that only they pay for the closure their RETURN list needs.
 */
function writeListCommand(enc: Encoder, cmd: Extract<Command, { name: "LIST" | "LSUB" }>): void {
  enc.atom(cmd.name).sp();
  if (cmd.selectOptions.length > 0) enc.listWith(cmd.selectOptions, writeAtom).sp();
  enc.listMailbox(cmd.reference).sp();
  if (cmd.patterns === undefined) enc.listMailbox(cmd.pattern);
  else enc.listWith(cmd.patterns, writeListMailbox);
  if (cmd.returnOptions.length > 0)
    enc
      .sp()
      .atom("RETURN")
      .sp()
      .list(cmd.returnOptions, (o) =>
        o === "STATUS"
          ? enc
              .atom("STATUS")
              .sp()
              .listWith(cmd.statusItems ?? [], writeAtom)
          : enc.atom(o),
      );
}

// Writers for `listWith`, one item each: plain functions, so that writeCommand and writeResponse make no closure
// (a function any of whose variables a closure takes gets a new scope object on every call, whichever case runs).

function writeIdParam(enc: Encoder, [k, v]: readonly [string, string | null]): void {
  enc.string(k).sp().nstring(v);
}

function writeListMailbox(enc: Encoder, p: string): void {
  enc.listMailbox(p);
}

function writeSortCriterion(enc: Encoder, c: { readonly reverse: boolean; readonly key: string }): void {
  enc.atom(c.reverse ? `REVERSE ${c.key}` : c.key);
}

function writeStatusItem(enc: Encoder, [k, v]: readonly [string, number]): void {
  enc.atom(k).sp().number(v);
}

/** Body data always goes as a literal (it is message content, never a quoted string). */
function writeBody(enc: Encoder, data: Uint8Array | null, binary: boolean): void {
  if (data === null) enc.nil();
  else enc.literal(data, binary && data.indexOf(0) !== -1);
}

function namespaces(enc: Encoder, ns: readonly NamespaceDescr[] | null): void {
  if (ns === null) {
    enc.nil();
    return;
  }
  enc.list(
    ns,
    (n) => {
      enc.byte(0x28).string(n.prefix).sp();
      if (n.delimiter === null) enc.nil();
      else enc.string(n.delimiter);
      enc.byte(0x29);
    },
    ns.length,
  );
}

/** Writes one response line (with its literals) and CRLF. */
export function writeResponse(enc: Encoder, r: Response): void {
  switch (r.type) {
    case "continuation":
      enc.byte(0x2b).sp().text(r.text);
      break;
    case "status":
      enc
        .atom(r.tag ?? "*")
        .sp()
        .atom(r.status)
        .sp();
      if (r.code !== null) writeCode(enc, r.code), enc.sp();
      enc.text(r.text);
      break;
    case "EXISTS":
    case "EXPUNGE":
    case "RECENT":
      enc.raw(`* ${r.n} ${r.type}`);
      break;
    case "FETCH":
      enc.raw("* ").number(r.seq).raw(" FETCH ").listWith(r.attrs, writeFetchAttr);
      break;
    case "LIST":
    case "LSUB":
      enc.raw(`* ${r.type} `).flagList(r.attributes).sp();
      if (r.delimiter === null) enc.nil();
      else enc.string(r.delimiter);
      enc.sp();
      if (r.mailbox === null) throw new Error("imap-wire: invalid mailbox name must be dropped, not written");
      enc.mailbox(r.mailbox);
      if (r.childInfo !== undefined && r.childInfo.length > 0)
        enc.raw(' ("CHILDINFO" ').listWith(r.childInfo, writeString).byte(0x29);
      break;
    case "STATUS":
      if (r.mailbox === null) throw new Error("imap-wire: invalid mailbox name must be dropped, not written");
      enc.raw("* STATUS ").mailbox(r.mailbox).sp().listWith(r.items, writeStatusItem);
      break;
    case "SEARCH":
    case "SORT":
      enc.raw(`* ${r.type}`);
      for (const n of r.numbers) enc.sp().number(n);
      if (r.modseq !== undefined) enc.raw(" (MODSEQ ").number(r.modseq).byte(0x29);
      break;
    case "ESEARCH":
      enc.raw("* ESEARCH");
      if (r.tag !== null) enc.raw(" (TAG ").string(r.tag).byte(0x29);
      if (r.uid) enc.raw(" UID");
      if (r.min !== null) enc.raw(" MIN ").number(r.min);
      if (r.max !== null) enc.raw(" MAX ").number(r.max);
      if (r.count !== null) enc.raw(" COUNT ").number(r.count);
      if (r.all !== null && r.all.length > 0) enc.raw(" ALL ").seqSet(r.all);
      break;
    case "CAPABILITY":
    case "ENABLED":
      enc.raw(`* ${r.type}`);
      for (const c of r.capabilities) enc.sp().atom(c);
      break;
    case "FLAGS":
      enc.raw("* FLAGS ").flagList(r.flags);
      break;
    case "VANISHED":
      enc.raw(r.earlier ? "* VANISHED (EARLIER) " : "* VANISHED ").seqSet(r.uids);
      break;
    case "ID":
      enc.raw("* ID ");
      if (r.params === null) enc.nil();
      else enc.listWith(r.params, writeIdParam);
      break;
    case "NAMESPACE":
      enc.raw("* NAMESPACE ");
      namespaces(enc, r.personal);
      enc.sp();
      namespaces(enc, r.other);
      enc.sp();
      namespaces(enc, r.shared);
      break;
    case "unknown":
      throw new Error(`imap-wire: unknown response ${r.name} must be dropped, not written`);
  }
  enc.crlf();
}

/**
 * The octets of a CATENATE message, once the proxy has assembled it (src/imap/commands/catenate.ts): every part is
 * TEXT by then, and goes upstream as one literal. A URL part is never relayed: upstream would resolve it outside the
 * agent's view.
 */
function assembledParts(parts: readonly CatenatePart[]): Uint8Array[] {
  return parts.map((p) => {
    if (p.type !== "TEXT") throw new Error("APPEND: a CATENATE message must be assembled before it goes upstream");
    return p.data;
  });
}
