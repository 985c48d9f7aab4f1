// `mailgator account login`'s loopback listener (docs/accounts.md "Logging in") takes requests from anything on the
// machine while it waits for the browser: one whose request-target is no URL is answered 400 and ignored, and the
// login goes on (bad input never ends the process).
import { afterAll, expect, setDefaultTimeout, test } from "bun:test";
import { rmSync } from "node:fs";
import { connect } from "node:net";
import { createMailbox } from "../fixtures/index.ts";
import { Child, MAIN, madeDirs, oauthConfig } from "./helpers.ts";

setDefaultTimeout(120_000);

afterAll(() => {
  for (const dir of madeDirs) rmSync(dir, { recursive: true, force: true });
});

/** Sends `request` raw to 127.0.0.1:`port`; resolves with what came back before the connection ended. */
function raw(port: number, request: string): Promise<string> {
  return new Promise((resolve) => {
    let got = "";
    const socket = connect(port, "127.0.0.1", () => socket.write(request));
    socket.on("data", (d) => {
      got += d.toString("latin1");
      if (got.includes("\r\n\r\n")) socket.end();
    });
    socket.on("error", () => resolve(got));
    socket.on("close", () => resolve(got));
    setTimeout(() => socket.destroy(), 5_000);
  });
}

test("a request-target that is no URL is answered 400; the login still completes", async () => {
  const { user } = await createMailbox();
  const setup = oauthConfig(user);
  const child = new Child([MAIN, "account", "login", "main", "-c", setup.config]);
  const [url] = await child.waitFor(/http:\/\/127\.0\.0\.1:\d+\/authorize\?\S+/);
  const [, port] = await child.waitFor(/Waiting for the redirect to http:\/\/127\.0\.0\.1:(\d+)\//);
  for (const target of ["http://[", "//[/callback"]) {
    const answer = await raw(Number(port), `GET ${target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`);
    expect(answer).toMatch(/^HTTP\/1\.1 400 /);
  }
  expect(child.proc.exitCode).toBeNull();
  const page = await fetch(url!);
  expect(page.status).toBe(200);
  expect(await page.text()).toContain("login received");
  expect(await child.exit()).toBe(0);
  expect(child.stdout).toContain("logged in");
  expect(child.stderr).toBe("");
});
