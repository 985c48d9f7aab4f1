/**
 * docs/protocol.md §7 case 36 on the IMAP side: a man in the middle between the proxy and Dovecot's plain port
 * (which offers STARTTLS) with `upstream_tls = "starttls"`. A forwarder relays the real server and changes the part
 * before the handshake, as someone on the path can: it strips STARTTLS from every capability list, answers the
 * STARTTLS command with NO itself, or adds responses in clear behind Dovecot's STARTTLS OK. The proxy must send no
 * credential in the first two cases (the agent gets `NO [UNAVAILABLE]`, an `error` row says why), and in the third
 * must not read the added responses as answers in the TLS session that follows (RFC 9051 §6.2.1).
 */

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { connect, createServer, type Server, type Socket } from "node:net";
import { createMailbox, type TestMailbox, upstreams } from "../fixtures/index.ts";
import { proxyClient, RawImap, startTestProxy, statusOf } from "./helpers.ts";

type Attack = "strip" | "refuse" | "inject";

interface Mitm {
  readonly port: number;
  /** The command lines the proxy sent in clear (before any handshake), in order. */
  readonly clientLines: string[];
  /** Whether the STARTTLS OK was relayed and the connection switched to relaying the handshake. */
  tlsRelayed: boolean;
  close(): Promise<void>;
}

/** Responses added in clear behind the STARTTLS OK: a capability list without LOGIN and a NO for the next tags. */
const INJECTED =
  "* CAPABILITY IMAP4rev1 LOGINDISABLED\r\nM1 NO [ALERT] injected\r\nM2 NO [ALERT] injected\r\n" +
  "M3 NO [ALERT] injected\r\nM4 NO [ALERT] injected\r\n";

async function startMitm(attack: Attack): Promise<Mitm> {
  const up = upstreams();
  const open = new Set<Socket>();
  const state: Mitm = {
    port: 0,
    clientLines: [],
    tlsRelayed: false,
    close: async () => {
      for (const s of open) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  const server: Server = createServer((client: Socket) => {
    const upstream = connect({ host: up.host, port: up.ports.imap });
    for (const s of [client, upstream]) {
      open.add(s);
      s.on("error", () => {});
      s.on("close", () => {
        client.destroy();
        upstream.destroy();
      });
    }
    let raw = false;
    let startTlsTag: string | null = null;
    let fromClient = "";
    let fromServer = "";
    client.on("data", (d: Buffer) => {
      if (raw) {
        upstream.write(d);
        return;
      }
      fromClient += d.toString("latin1");
      for (let i = fromClient.indexOf("\r\n"); i >= 0; i = fromClient.indexOf("\r\n")) {
        const line = fromClient.slice(0, i);
        fromClient = fromClient.slice(i + 2);
        state.clientLines.push(line);
        const [tag = "", name = ""] = line.split(" ");
        if (name.toUpperCase() === "STARTTLS") {
          if (attack === "refuse") {
            client.write(`${tag} NO STARTTLS not available\r\n`);
            continue;
          }
          startTlsTag = tag;
        }
        upstream.write(`${line}\r\n`);
      }
    });
    upstream.on("data", (d: Buffer) => {
      if (raw) {
        client.write(d);
        return;
      }
      fromServer += d.toString("latin1");
      let out = "";
      for (let i = fromServer.indexOf("\r\n"); i >= 0; i = fromServer.indexOf("\r\n")) {
        let line = fromServer.slice(0, i);
        fromServer = fromServer.slice(i + 2);
        if (attack === "strip") line = line.replace(/ STARTTLS\b/gi, "");
        out += `${line}\r\n`;
        if (startTlsTag !== null && line.startsWith(`${startTlsTag} OK`)) {
          // From here on the two sides speak TLS to each other; the forwarder only relays.
          if (attack === "inject") out += INJECTED;
          raw = true;
          state.tlsRelayed = true;
          client.write(out);
          if (fromServer !== "") client.write(fromServer);
          return;
        }
      }
      client.write(out);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return Object.assign(state, { port: (server.address() as { port: number }).port });
}

let mailbox: TestMailbox;
beforeAll(async () => {
  mailbox = await createMailbox({ seed: { folders: { INBOX: 2 }, seed: 36 } });
});

describe('§7 case 36, IMAP: a man in the middle before the upstream STARTTLS (upstream_tls = "starttls")', () => {
  const mitms: Mitm[] = [];
  afterAll(async () => {
    for (const m of mitms) await m.close();
  });

  for (const attack of ["strip", "refuse"] as const) {
    const what = attack === "strip" ? "STARTTLS stripped from the capabilities" : "STARTTLS answered NO";
    test(`${what}: no credential leaves, NO [UNAVAILABLE], an error row`, async () => {
      const mitm = await startMitm(attack);
      mitms.push(mitm);
      const proxy = await startTestProxy({ upstreamTls: "starttls", upstreamAddr: `127.0.0.1:${mitm.port}` });
      try {
        const raw = await RawImap.open(proxy.port);
        const reply = await raw.command("a", `LOGIN "${mailbox.user}" "${mailbox.password}"`);
        raw.close();
        expect(statusOf(reply, "a")).toBe("a NO [UNAVAILABLE] Upstream server unavailable");
        expect(mitm.tlsRelayed).toBe(false);
        // Nothing that carries a credential, in any form, went out in clear.
        const sent = mitm.clientLines.join("\n");
        expect(sent).not.toMatch(/\b(LOGIN|AUTHENTICATE)\b/i);
        expect(sent).not.toContain(mailbox.password);
        expect(sent).not.toContain(Buffer.from(mailbox.password).toString("base64").slice(0, 8));
        const row = (await proxy.rows()).find((r) => r.command === "LOGIN");
        expect(row?.decision).toBe("error");
        expect(row?.reason ?? "").toMatch(/STARTTLS/);
        expect(row?.reason ?? "").not.toContain(mailbox.password);
      } finally {
        await proxy.close();
      }
    });
  }

  test("responses added in clear behind the STARTTLS OK are not read in the TLS session", async () => {
    const mitm = await startMitm("inject");
    mitms.push(mitm);
    const proxy = await startTestProxy({ upstreamTls: "starttls", upstreamAddr: `127.0.0.1:${mitm.port}` });
    try {
      // Read as answers, the added lines would refuse the login or the capability list after the handshake.
      const client = await proxyClient(proxy.port, mailbox.user, mailbox.password);
      const box = await client.mailboxOpen("INBOX");
      expect(box.exists).toBe(2);
      await client.logout();
      expect(mitm.tlsRelayed).toBe(true);
      // In clear the proxy sent the capability request (or not, when the greeting had them) and STARTTLS only.
      expect(mitm.clientLines.map((l) => l.split(" ")[1]?.toUpperCase())).toEqual(
        mitm.clientLines.length === 1 ? ["STARTTLS"] : ["CAPABILITY", "STARTTLS"],
      );
    } finally {
      await proxy.close();
    }
  });
});
