/**
 * Tool arguments, for the agent and the admin servers alike (docs/mcp.md "Errors"): a tool takes exactly the
 * properties its schema names. Any other is refused as an invalid argument, never dropped: the SDK's plain shapes
 * strip unknown properties, so a misspelled `Folder` would leave `folder` at its default and act there, and an
 * `attachments` the tool does not take would send the message without them.
 */

import { type ZodRawShape, z } from "zod";

/** The schema of a tool's arguments: the properties of `shape` and no other (`additionalProperties: false`). */
export function toolArgs<S extends ZodRawShape>(shape: S) {
  return z.strictObject(shape);
}

/** The schema of a tool that takes no arguments: any property given is refused. */
export const NO_ARGS = toolArgs({});
