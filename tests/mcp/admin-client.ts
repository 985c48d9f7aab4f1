/**
 * `mailgator mcp --admin` started from source and driven by the MCP SDK's own client over stdio, as a coding agent
 * runs it: a helper for the admin tests that need no `serve` beside it.
 */

import { join } from "node:path";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";

const MAIN = join(import.meta.dir, "../../src/cli/main.ts");

// biome-ignore lint/suspicious/noExplicitAny: tool results are JSON read field by field in the tests
export type Json = any;

export interface AdminClient {
  readonly client: Client;
  call(name: string, args?: Record<string, unknown>): Promise<{ text: string; isError: boolean; json: Json }>;
  close(): Promise<void>;
}

/** This process's environment without agent credentials (MAILGATOR_TOKEN*, MAILGATOR_PASSWORD*). */
export function adminEnv(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env))
    if (v !== undefined && !k.startsWith("MAILGATOR_TOKEN") && !k.startsWith("MAILGATOR_PASSWORD")) env[k] = v;
  return env;
}

/** Starts `mailgator mcp --admin -c FILE ARGS...` with `env` (default `adminEnv()`). */
export async function startAdminClient(
  file: string,
  args: readonly string[] = [],
  env: Record<string, string> = adminEnv(),
): Promise<AdminClient> {
  const transport = new StdioClientTransport({
    command: process.execPath,
    args: [MAIN, "mcp", "--admin", "-c", file, ...args],
    env,
    stderr: "pipe",
  });
  const client = new Client({ name: "mailgator-admin-test", version: "1.0.0" });
  await client.connect(transport);
  return {
    client,
    async call(name, a = {}) {
      const r = (await client.callTool({ name, arguments: a }, undefined, { timeout: 40_000 })) as {
        content: { type: string; text: string }[];
        isError?: boolean;
      };
      const text = r.content.map((c) => c.text).join("\n");
      let json: unknown = null;
      try {
        json = JSON.parse(text);
      } catch {}
      return { text, isError: r.isError === true, json };
    },
    close: () => client.close(),
  };
}
