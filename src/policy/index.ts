/**
 * The policy engine: pure, synchronous, and independent of the rest of
 * Mailgator (it imports nothing outside this folder).
 */

/**
 * Transitional: address lists are read in src/mail now (src/mail/address.ts). src/cli/commands/explain.ts still
 * imports the parser from here; remove this line once it imports from src/mail.
 */
export type {
  Action,
  CandidateRule,
  Decision,
  Field,
  MessageField,
  Outcome,
  Request,
  RuleSpec,
  ShadowedRule,
} from "./engine.ts";
export { compilePolicy, MESSAGE_FIELDS, Policy } from "./engine.ts";
export type { Glob, GlobKind } from "./glob.ts";
export { compileGlob, GlobError } from "./glob.ts";
export type { Operation } from "./operations.ts";
export { expandOperation, FILTERED_OPERATIONS, isOperation, OPERATIONS, SHORTHANDS } from "./operations.ts";
