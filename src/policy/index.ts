/**
 * The policy engine: pure, synchronous, and independent of the rest of
 * Mailgator (it imports nothing outside this folder).
 */
export { compilePolicy, Policy, MESSAGE_FIELDS } from "./engine.ts";
export type { Action, Decision, Field, MessageField, Outcome, Request, RuleSpec, ShadowedRule } from "./engine.ts";
export { compileGlob, GlobError } from "./glob.ts";
export type { Glob, GlobKind } from "./glob.ts";
export { parseAddressList } from "./address.ts";
export type { ParsedAddressList } from "./address.ts";
export { OPERATIONS, SHORTHANDS, expandOperation, isOperation } from "./operations.ts";
export type { Operation } from "./operations.ts";
