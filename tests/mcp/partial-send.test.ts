/**
 * sendThroughProxy (src/mcp/proxy-client.ts) never reports as failed a message the listener accepted: against a
 * listener that, unlike Mailgator's (docs/smtp.md "All or nothing"), refuses one recipient and then accepts DATA for
 * the other, nodemailer sends the message, and the outcome says it was sent and names the refused recipient. An
 * in-process SMTP server plays that listener: Mailgator's own cannot be made to do it.
 */

import { afterAll, beforeAll, expect, test } from "bun:test";
import { type AddressInfo, createServer, type Server } from "node:net";
import type { ListenerConfig } from "../../src/config/index.ts";
import { sendThroughProxy } from "../../src/mcp/proxy-client.ts";

let server: Server;
let port: number;
const delivered: string[] = [];

beforeAll(async () => {
  server = createServer((socket) => {
    let buffer = "";
    let inData = false;
    socket.write("220 partial.test ESMTP\r\n");
    socket.on("data", (chunk) => {
      buffer += chunk.toString("latin1");
      for (;;) {
        if (inData) {
          const end = buffer.indexOf("\r\n.\r\n");
          if (end === -1) return;
          delivered.push(buffer.slice(0, end));
          buffer = buffer.slice(end + 5);
          inData = false;
          socket.write("250 2.0.0 Ok: queued\r\n");
          continue;
        }
        const eol = buffer.indexOf("\r\n");
        if (eol === -1) return;
        const line = buffer.slice(0, eol);
        buffer = buffer.slice(eol + 2);
        const verb = line.slice(0, 4).toUpperCase();
        if (verb === "EHLO") socket.write("250-partial.test\r\n250 AUTH PLAIN\r\n");
        else if (verb === "AUTH") socket.write("235 2.7.0 ok\r\n");
        else if (verb === "RCPT" && line.includes("refused@"))
          socket.write("452 4.7.1 Quota exceeded; recipient not accepted\r\n");
        else if (verb === "DATA") {
          inData = true;
          socket.write("354 go on\r\n");
        } else if (verb === "QUIT") socket.end("221 2.0.0 bye\r\n");
        else socket.write("250 2.0.0 ok\r\n");
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  port = (server.address() as AddressInfo).port;
});

afterAll(() => {
  server.close();
});

test("DATA accepted after a refused recipient: reported as sent, the refused recipient named", async () => {
  const addr = { host: "127.0.0.1", port };
  const listener: ListenerConfig = {
    listenAddr: addr,
    listenTls: "none",
    tlsCertFile: null,
    tlsKeyFile: null,
    upstreamAddr: addr,
    upstreamTls: "none",
    upstreamTlsSkipVerify: false,
    upstreamCaFile: null,
  };
  const outcome = await sendThroughProxy(
    listener,
    { user: "u", secret: "p", caFile: null },
    { from: "me@corp.test", to: ["ok@corp.test", "refused@corp.test"], cc: [], bcc: [], subject: "s", text: "t" },
  );
  expect(delivered).toHaveLength(1);
  expect(outcome.response).toStartWith("250 2.0.0 Ok: queued");
  expect(outcome.refused).toHaveLength(1);
  expect(outcome.refused[0]).toStartWith("<refused@corp.test>");
  expect(outcome.refused[0]).toContain("452 4.7.1");
});
