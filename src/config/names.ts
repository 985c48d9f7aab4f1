/**
 * Names the config gives to accounts, agents and approver groups, and how they are looked up. A name is a key of a
 * table (`[accounts.NAME]`, `[approvals.groups.NAME]`), and a plain object also answers, through its prototype, to
 * names it was never given (`toString`, `constructor`): every lookup of a config name checks for an own property
 * (docs/config.md "Errors").
 */

/**
 * Refused as account, agent and group names: `__proto__` sets an object's prototype rather than a key, and the
 * schema drops all three from a table, so `[accounts.constructor]` would vanish while an agent's `account =
 * "constructor"` still found something.
 */
export const RESERVED_NAMES: readonly string[] = Object.freeze(["__proto__", "constructor", "prototype"]);

export function isReservedName(name: string): boolean {
  return RESERVED_NAMES.includes(name);
}

/** `record[name]` when `name` is the record's own key, else undefined (never an Object.prototype member). */
export function ownEntry<T>(record: Readonly<Record<string, T>> | undefined, name: string): T | undefined {
  return record !== undefined && Object.hasOwn(record, name) ? record[name] : undefined;
}
