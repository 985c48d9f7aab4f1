/**
 * Client address checks for `allowed_ips` (docs/config.md "Vault mode"): exact addresses or CIDR ranges, IPv4 and IPv6.
 */

import { isIP } from "node:net";

function ipv4ToBits(address: string): bigint | null {
  const parts = address.split(".");
  if (parts.length !== 4) return null;
  let value = 0n;
  for (const part of parts) {
    if (!/^\d{1,3}$/.test(part) || Number(part) > 255) return null;
    value = (value << 8n) | BigInt(Number(part));
  }
  return value;
}

function ipv6ToBits(address: string): bigint | null {
  let text = address;
  let tail: bigint | null = null;
  const lastColon = text.lastIndexOf(":");
  if (text.includes(".")) {
    // ::ffff:1.2.3.4
    tail = ipv4ToBits(text.slice(lastColon + 1));
    if (tail === null) return null;
    text = `${text.slice(0, lastColon + 1)}0:0`;
  }
  const halves = text.split("::");
  if (halves.length > 2) return null;
  const head = halves[0] ? halves[0].split(":") : [];
  const rest = halves.length === 2 && halves[1] ? halves[1].split(":") : [];
  const missing = 8 - head.length - rest.length;
  if ((halves.length === 1 && missing !== 0) || missing < 0) return null;
  const groups = [...head, ...Array<string>(halves.length === 2 ? missing : 0).fill("0"), ...rest];
  let value = 0n;
  for (const g of groups) {
    if (!/^[0-9a-f]{1,4}$/i.test(g)) return null;
    value = (value << 16n) | BigInt(parseInt(g, 16));
  }
  if (tail !== null) value = (value & ~0xffffffffn) | tail;
  return value;
}

/** An address's bits, IPv4 (width 32) or IPv6 (width 128) as written. */
function parseWritten(address: string): { bits: bigint; width: number } | null {
  const kind = isIP(address);
  const bits = kind === 4 ? ipv4ToBits(address) : kind === 6 ? ipv6ToBits(address) : null;
  return bits === null ? null : { bits, width: kind === 4 ? 32 : 128 };
}

/** True for an IPv6 address in ::ffff:0:0/96, the IPv4-mapped addresses (RFC 4291 §2.5.5.2). */
function isMapped(p: { bits: bigint; width: number }): boolean {
  return p.width === 128 && p.bits >> 32n === 0xffffn;
}

function parse(address: string): { bits: bigint; width: number } | null {
  const p = parseWritten(address);
  // An IPv4-mapped IPv6 address is the IPv4 client it stands for.
  return p !== null && isMapped(p) ? { bits: p.bits & 0xffffffffn, width: 32 } : p;
}

interface IpEntry {
  readonly bits: bigint;
  readonly width: number;
  readonly prefix: number;
}

/**
 * An `allowed_ips` entry read (docs/config.md "Vault mode"): an address or CIDR range; a string says why it is not
 * one. An IPv4-mapped entry (RFC 4291 §2.5.5.2) stands for IPv4, as a mapped client does: `::ffff:a.b.c.d/p` is
 * a.b.c.d/(p - 96), and one shorter than /96 is refused, since it would also cover IPv6 addresses that are not
 * mapped.
 */
export function readIpEntry(entry: string): IpEntry | string {
  const generic = `expected an IP address or CIDR range, got ${JSON.stringify(entry)}`;
  const [addr, bits, extra] = entry.split("/");
  if (extra !== undefined || addr === undefined) return generic;
  const base = parseWritten(addr);
  if (base === null) return generic;
  if (bits !== undefined && (!/^\d{1,3}$/.test(bits) || Number(bits) > base.width)) return generic;
  const prefix = bits === undefined ? base.width : Number(bits);
  if (!isMapped(base)) return { ...base, prefix };
  if (prefix < 96)
    return (
      `${JSON.stringify(entry)} is an IPv4-mapped range shorter than /96, which would also take IPv6 addresses that ` +
      `are not IPv4-mapped; write IPv4 clients as IPv4 (e.g. "10.0.0.0/8") and IPv6 ranges apart`
    );
  return { bits: base.bits & 0xffffffffn, width: 32, prefix: prefix - 96 };
}

/** True when `client` equals one of the entries or lies in one of the CIDR ranges; null means any address. */
export function ipAllowed(client: string, allowed: readonly string[] | null): boolean {
  if (allowed === null) return true;
  const c = parse(client);
  if (c === null) return false;
  for (const text of allowed) {
    const entry = readIpEntry(text);
    if (typeof entry === "string" || entry.width !== c.width) continue;
    const shift = BigInt(entry.width - entry.prefix);
    if (entry.bits >> shift === c.bits >> shift) return true;
  }
  return false;
}

/**
 * The key a client address is counted under for `max_connections_per_ip` (docs/config.md, `[limits]`): an IPv4
 * address as it is, an IPv6 address by its /64 prefix, since one IPv6 host is usually given a whole /64
 * (RFC 4291 §2.5.4 interface identifiers are 64 bits) and could otherwise take a new address per connection.
 * An address that does not parse is counted as itself.
 */
export function addressKey(address: string): string {
  const p = parse(address);
  if (p === null) return address;
  if (p.width === 32) {
    const b = Number(p.bits);
    return `${b >>> 24}.${(b >>> 16) & 255}.${(b >>> 8) & 255}.${b & 255}`;
  }
  return `${(p.bits >> 64n).toString(16)}::/64`;
}

/**
 * The one host name taken as loopback: RFC 6761 §6.3 reserves it for the loopback interface, and resolvers answer it
 * from the hosts file rather than from DNS. Any other name is not loopback, whatever it starts with.
 */
const LOOPBACK_NAME = "localhost";

/**
 * True for a loopback host (docs/config.md `[admin]`): an IPv4 literal in 127.0.0.0/8 (RFC 1122 §3.2.1.3), the IPv6
 * literal ::1 (RFC 4291 §2.5.3), or the name `localhost`. Decided from the literal alone, never by a prefix of the
 * text: `127.example.net` and `127.0.0.1.example.net` are names whose owners point them where they like. An IPv6
 * host is given without brackets; an IPv4-mapped address is not taken as loopback.
 */
export function isLoopbackHost(host: string): boolean {
  if (host.toLowerCase() === LOOPBACK_NAME) return true;
  const p = parseWritten(host);
  if (p === null) return false;
  return p.width === 32 ? p.bits >> 24n === 127n : p.bits === 1n;
}

/** Whether the host of `url` is a loopback host (isLoopbackHost); a URL brackets an IPv6 literal (RFC 3986 §3.2.2). */
export function isLoopbackUrlHost(url: URL): boolean {
  return isLoopbackHost(url.hostname.replace(/^\[(.*)\]$/, "$1"));
}

/**
 * An IP literal as a listening socket binds it, or null for a name: `4:` and the IPv4 address, or `6:` and the IPv6
 * address's bits in hex, however it is written (`::1` and `0:0:0:0:0:0:0:1` are one). An IPv4-mapped address
 * (RFC 4291 §2.5.5.2) is the IPv4 address it stands for: a dual-stack socket on `::ffff:127.0.0.1` takes 127.0.0.1.
 */
export function listenKey(host: string): string | null {
  const p = parse(host);
  if (p === null) return null;
  return p.width === 32 ? `4:${addressKey(host)}` : `6:${p.bits.toString(16)}`;
}
