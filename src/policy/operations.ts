/**
 * Operations a rule can allow or deny (docs/config.md "Operations") and the shorthands that
 * expand to them. Each operation is one bit, so a rule's operation set is a
 * number and the first check of every evaluation is a single AND.
 */

export const OPERATIONS = [
  "folder:read",
  "folder:write",
  "mail:read",
  "mail:flag",
  "mail:delete",
  "mail:move",
  "mail:append",
  "mail:send",
] as const;

export type Operation = (typeof OPERATIONS)[number];

export const SHORTHANDS: Readonly<Record<string, readonly Operation[]>> = {
  read: ["folder:read", "mail:read"],
  write: ["mail:flag", "mail:delete", "mail:move", "mail:append", "folder:write"],
  send: ["mail:send"],
  all: OPERATIONS,
};

/**
 * The IMAP operations whose rules may test message fields (from, to, cc, bcc, subject, has_attachment): for them the
 * IMAP proxy filters a folder message by message (docs/filtering.md). Sending may test them too (the SMTP proxy
 * decides each recipient of the message it holds); no other operation may (src/config/rules.ts refuses such a rule).
 */
export const FILTERED_OPERATIONS: ReadonlySet<Operation> = new Set<Operation>(["folder:read", "mail:read"]);

const BIT = new Map<Operation, number>(OPERATIONS.map((op, i) => [op, 1 << i]));

export const ALL_OPERATIONS_MASK = (1 << OPERATIONS.length) - 1;

export function isOperation(name: string): name is Operation {
  return BIT.has(name as Operation);
}

/** The operations a name stands for: itself, or a shorthand's expansion; undefined if unknown. */
export function expandOperation(name: string): readonly Operation[] | undefined {
  if (isOperation(name)) return [name];
  return SHORTHANDS[name];
}

const INDEX = new Map<Operation, number>(OPERATIONS.map((op, i) => [op, i]));

export function operationBit(op: Operation): number {
  return BIT.get(op) ?? 0;
}

export function operationIndex(op: Operation): number {
  return INDEX.get(op) ?? 31;
}

export function operationMask(ops: readonly Operation[]): number {
  let mask = 0;
  for (const op of ops) mask |= operationBit(op);
  return mask;
}

export function operationsOf(mask: number): Operation[] {
  return OPERATIONS.filter((op) => (mask & operationBit(op)) !== 0);
}
