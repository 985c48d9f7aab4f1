/**
 * An approval whose claim fails in the state database (locked past its busy timeout, out of space, read-only):
 * docs/approvals.md "Deciding" logs in upstream first (step 1), then claims the message (step 2). When the claim
 * throws, nothing was sent and the message stays held; the upstream connection that step 1 opened must be closed
 * then too, not left logged in until the upstream's own timeout (minutes): in `serve` every such attempt would
 * otherwise keep one authenticated connection to the mail server open.
 */

import { afterAll, beforeAll, expect, test } from "bun:test";
import type { Socket } from "node:net";
import { type ApprovalContext, approve } from "../../src/approvals/service.ts";
import { TcpRelay } from "../fixtures/tcp-relay.ts";
import { askManagersRules, holdMessage, marker, startTestProxy, type TestProxy, upstreams } from "../smtp/helpers.ts";

const RULES = askManagersRules("http://127.0.0.1:1");

let relay: TcpRelay;
let proxy: TestProxy;
let ctx: ApprovalContext;
/** Mailgator's connections through the relay to Postfix, and whether each is closed. */
const links: { socket: Socket; closed: boolean }[] = [];

beforeAll(async () => {
  const up = upstreams();
  relay = await TcpRelay.start({ host: up.host, port: up.ports.smtp }, (client) => {
    const link = { socket: client, closed: false };
    client.on("close", () => {
      link.closed = true;
    });
    links.push(link);
    return undefined;
  });
  proxy = await startTestProxy({
    rules: RULES,
    approvals: true,
    upstreamAddr: `127.0.0.1:${relay.port}`,
    upstreamTls: "none",
  });
  ctx = { config: proxy.config, store: proxy.approvals!, audit: proxy.audit, protocol: "cli" };
});

afterAll(async () => {
  await proxy.close();
  await relay.close();
});

/** Holds a message to `to` marked `m`: its id. */
function hold(to: string, m: string): Promise<string> {
  return holdMessage(proxy.port, to, `claim ${m}`, `Hello ${m}\n`);
}

test("a claim the state database refuses: nothing sent, still held, the upstream connection closed", async () => {
  const m = marker();
  const id = await hold(`someone-${m}@outside.example`, m);
  const store = ctx.store;
  const before = links.length;
  // The instance's own property shadows the method for this one call.
  Object.defineProperty(store, "claim", {
    configurable: true,
    value: () => {
      throw new Error("database is locked");
    },
  });
  try {
    await expect(approve(ctx, id, "review")).rejects.toThrow("database is locked");
  } finally {
    Reflect.deleteProperty(store, "claim");
  }
  expect(store.row(id)!.state).toBe("held");
  const opened = links.slice(before);
  expect(opened.length).toBe(1);
  // Generous: a QUIT and its answer take milliseconds; Postfix itself would keep the connection for minutes.
  for (let waited = 0; waited < 5000 && !opened[0]!.closed; waited += 50) await Bun.sleep(50);
  expect(opened[0]!.closed).toBe(true);
  // The message can still be approved once the database takes the claim.
  expect((await approve(ctx, id, "review")).outcome).toBe("sent");
});
