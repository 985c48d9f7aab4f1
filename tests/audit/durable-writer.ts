/**
 * Child process for the crash and concurrency tests: writes rows to the log given as argv[2] and prints the id of
 * every row whose durable() resolved, one per line. Up to 4 durable() calls are in flight at once, with record()
 * rows in between, so commits carry mixed batches. Stops after argv[3] durable rows (default: never).
 */
import { AuditLog } from "../../src/audit/index.ts";
import { sampleEvent } from "./helpers.ts";

const path = process.argv[2];
if (path === undefined) throw new Error("usage: durable-writer.ts PATH [COUNT]");
const limit = Number(process.argv[3] ?? Infinity);
const log = AuditLog.open(path);
const IN_FLIGHT = 4;

let next = 0;
async function worker(): Promise<void> {
  while (next < limit) {
    const seq = next++;
    log.record(sampleEvent({ decision: "deny", target: `queued-${seq}` }));
    const id = await log.durable(sampleEvent({ protocol: "smtp", command: "RCPT TO", target: `durable-${seq}` }));
    process.stdout.write(`${id} ${seq}\n`);
  }
}
await Promise.all(Array.from({ length: IN_FLIGHT }, worker));
await log.close();
