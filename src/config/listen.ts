/**
 * Listeners that would bind the same port (docs/config.md "One port per listener"). serve binds `[imap]`, `[smtp]`
 * and `[admin]` one after another; the second bind of a taken port fails (EADDRINUSE) and serve exits, so the config
 * is refused when it loads instead, naming both settings, as every other problem `check` can see. What conflicts is
 * what Linux refuses, with the dual-stack sockets Node and Bun open on `::`: the same address; `0.0.0.0` and any
 * IPv4 address; `::` and any address at all. A name is compared as a name, except that `localhost` may be either
 * loopback address (the hosts file decides which it resolves to) and that a wildcard takes whatever a name
 * resolves to; a name against another address cannot be told without resolving it, and is not refused.
 */

import { listenKey } from "../net/ip.ts";
import type { HostPort } from "./types.ts";

/** `0.0.0.0`: every IPv4 address. */
const ANY_IPV4 = "4:0.0.0.0";
/** `::`: every address, IPv4 and IPv6, on a dual-stack socket. */
const ANY = "6:0";

/** What a host binds: IP keys (listenKey), or `name:` and the lower-cased name. */
function binds(host: string): string[] {
  const key = listenKey(host);
  if (key !== null) return [key];
  const name = host.toLowerCase();
  return name === "localhost" ? [`name:${name}`, "4:127.0.0.1", "6:1"] : [`name:${name}`];
}

function overlap(a: readonly string[], b: readonly string[]): boolean {
  if (a.includes(ANY) || b.includes(ANY)) return true;
  // 0.0.0.0 takes every IPv4 address, and may take what a name resolves to.
  const takesAll = (x: readonly string[], y: readonly string[]): boolean =>
    x.includes(ANY_IPV4) && y.some((k) => k.startsWith("4:") || k.startsWith("name:"));
  if (takesAll(a, b) || takesAll(b, a)) return true;
  return a.some((k) => b.includes(k));
}

/** Whether two listen addresses would take the same port; port 0 (a free port each) never does. */
export function sameListenPort(a: HostPort, b: HostPort): boolean {
  return a.port !== 0 && a.port === b.port && overlap(binds(a.host), binds(b.host));
}

/** A loopback key (listenKey): 127.0.0.0/8 or ::1. */
function loopback(key: string): boolean {
  return key.startsWith("4:127.") || key === "6:1";
}

/**
 * Whether connecting to `upstream` reaches a socket listening on `listen`: the same port, and the upstream the same
 * address or name as the listener (localhost either loopback address), or a loopback address where the listener
 * takes every address (0.0.0.0 every IPv4 one, :: every one). Another host's name or address is not known here to
 * be this host's, and is not refused: `0.0.0.0:993` for agents with `imap.example.com:993` upstream is the usual
 * setup.
 */
export function reachesListener(listen: HostPort, upstream: HostPort): boolean {
  if (listen.port === 0 || listen.port !== upstream.port) return false;
  const l = binds(listen.host);
  const u = binds(upstream.host);
  if (u.some((k) => l.includes(k))) return true;
  if (l.includes(ANY)) return u.some(loopback);
  return l.includes(ANY_IPV4) && u.some((k) => k.startsWith("4:127."));
}
