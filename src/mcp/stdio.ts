/**
 * Serving MCP on stdin/stdout, for the agent and the admin servers alike (docs/mcp.md "Errors").
 */

import type { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StdioServerTransport } from "@modelcontextprotocol/sdk/server/stdio.js";

/**
 * The SDK's read buffer (its default size, named here): what it holds of a request line not yet ended, plus the
 * chunk that arrives, may not pass it. So a request line up to this size is read when it arrives after the one
 * before was answered, while two large lines sent back to back can pass it together. Past it the SDK drops the
 * transport, and the server exits with status 1 and says why.
 */
export const MAX_MCP_REQUEST_BYTES = 10 * 1024 * 1024;

export function stdioTransport(): StdioServerTransport {
  return new StdioServerTransport(process.stdin, process.stdout, { maxBufferSize: MAX_MCP_REQUEST_BYTES });
}

/**
 * Serves `server` until the client closes stdin (status 0) or the transport fails (status 1: a request over
 * MAX_MCP_REQUEST_BYTES). Each error the SDK reports, a line that is not JSON-RPC too, is written to stderr.
 */
export async function serveOnStdio(server: McpServer, transport = stdioTransport()): Promise<number> {
  let failure: Error | null = null;
  let ended = false;
  const closed = new Promise<void>((done) => {
    server.server.onclose = () => done();
    const end = (): void => {
      ended = true;
      done();
    };
    process.stdin.once("end", end);
    process.stdin.once("close", end);
  });
  server.server.onerror = (error) => {
    failure = error;
    process.stderr.write(`mailgator mcp: ${error.message}\n`);
  };
  await server.connect(transport);
  await closed;
  await server.close().catch(() => undefined);
  if (ended || failure === null) return 0;
  process.stderr.write("mailgator mcp: the connection to the client failed; exiting\n");
  return 1;
}
