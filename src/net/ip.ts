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

function parse(address: string): { bits: bigint; width: number } | null {
  const kind = isIP(address);
  if (kind === 4) {
    const bits = ipv4ToBits(address);
    return bits === null ? null : { bits, width: 32 };
  }
  if (kind === 6) {
    const bits = ipv6ToBits(address);
    if (bits === null) return null;
    // An IPv4-mapped IPv6 address is the IPv4 client it stands for.
    if (bits >> 32n === 0xffffn) return { bits: bits & 0xffffffffn, width: 32 };
    return { bits, width: 128 };
  }
  return null;
}

/** True when `client` equals one of the entries or lies in one of the CIDR ranges; null means any address. */
export function ipAllowed(client: string, allowed: readonly string[] | null): boolean {
  if (allowed === null) return true;
  const c = parse(client);
  if (c === null) return false;
  for (const entry of allowed) {
    const slash = entry.indexOf("/");
    const base = parse(slash === -1 ? entry : entry.slice(0, slash));
    if (base === null || base.width !== c.width) continue;
    const prefix = slash === -1 ? base.width : Number(entry.slice(slash + 1));
    if (!Number.isInteger(prefix) || prefix < 0 || prefix > base.width) continue;
    const shift = BigInt(base.width - prefix);
    if (base.bits >> shift === c.bits >> shift) return true;
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
