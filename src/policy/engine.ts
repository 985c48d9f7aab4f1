/**
 * The rule engine (docs/config.md "[[rules]]"): first match decides, no match denies.
 *
 * Pure and synchronous; compiled once per config load. A request may leave a
 * field unknown (`undefined`): the IMAP proxy asks about a folder before it
 * knows the messages in it, the SMTP proxy checks a recipient before the
 * headers arrive. Each rule condition is then true, false or unknown, and the
 * engine reports either a decision or the set of outcomes still possible.
 * `evaluate` resolves "still open" to deny, so a caller that forgot a field
 * fails closed.
 */

import { compileGlob, escapeLiteral, foldCase, folderGlobUsesRegex, type Glob } from "./glob.ts";
import {
  ALL_OPERATIONS_MASK,
  expandOperation,
  type Operation,
  operationBit,
  operationIndex,
  operationMask,
  operationsOf,
} from "./operations.ts";

export type Action = "allow" | "deny" | "ask";

/** What the engine needs of a rule; the config's rule type is a superset. */
export interface RuleSpec {
  readonly name: string;
  readonly action: Action;
  readonly folders?: readonly string[] | undefined;
  readonly from?: readonly string[] | undefined;
  readonly to?: readonly string[] | undefined;
  readonly cc?: readonly string[] | undefined;
  readonly bcc?: readonly string[] | undefined;
  readonly subject?: readonly string[] | undefined;
  readonly hasAttachment?: boolean | undefined;
  readonly agents?: readonly string[] | undefined;
  /** Operation names or shorthands; omitted means all. */
  readonly operations?: readonly string[] | undefined;
}

/** The message fields a rule can test. */
export const MESSAGE_FIELDS = ["from", "to", "cc", "bcc", "subject", "hasAttachment"] as const;
export type MessageField = (typeof MESSAGE_FIELDS)[number];
export type Field = MessageField | "folder" | "agent";

/**
 * One operation to decide. `undefined` means "not known yet"; `null` for
 * folder means "no folder applies" (a send), and for agent "no agent"
 * (pass-through mode), in which case rules scoped to agents do not match.
 * Folder names use `/` as the hierarchy delimiter. Address lists hold parsed
 * addr-specs. For a send, `to` is the envelope recipient being decided, and
 * `cc`/`bcc` hold it too when the headers class it so (docs/smtp.md "Send semantics").
 */
export interface Request {
  readonly operation: Operation;
  readonly agent?: string | null | undefined;
  readonly folder?: string | null | undefined;
  readonly from?: readonly string[] | undefined;
  readonly to?: readonly string[] | undefined;
  readonly cc?: readonly string[] | undefined;
  readonly bcc?: readonly string[] | undefined;
  readonly subject?: string | undefined;
  readonly hasAttachment?: boolean | undefined;
}

export interface Decision {
  readonly action: Action;
  /** The rule that decided; null for the default deny. */
  readonly rule: string | null;
  readonly ruleIndex: number | null;
  readonly reason: string;
}

export type Outcome =
  | { readonly decided: true; readonly decision: Decision }
  | {
      readonly decided: false;
      /** Unknown request fields the answer depends on. */
      readonly needs: ReadonlySet<Field>;
      /** Every action some value of those fields would lead to. */
      readonly possible: ReadonlySet<Action>;
    };

export interface ShadowedRule {
  readonly index: number;
  readonly name: string;
  readonly by: string;
  readonly byIndex: number;
}

type Tri = 0 | 1 | 2; // no, yes, unknown
const NO = 0;
const YES = 1;
const UNKNOWN = 2;

/** A rule as `Policy.candidateRules` returns it: its place, action and conditions, compiled. */
export type CandidateRule = CompiledRule;

interface CompiledRule {
  readonly index: number;
  readonly name: string;
  readonly action: Action;
  readonly ops: number;
  readonly agents: ReadonlySet<string> | null;
  readonly folders: readonly Glob[] | null;
  readonly from: readonly Glob[] | null;
  readonly to: readonly Glob[] | null;
  readonly cc: readonly Glob[] | null;
  readonly bcc: readonly Glob[] | null;
  readonly subject: readonly Glob[] | null;
  readonly hasAttachment: boolean | null;
  /** True when the rule has no condition besides operations and agents. */
  readonly unconditional: boolean;
  /** A human summary of the conditions, for reasons. */
  readonly summary: string;
}

function hasMessageConditions(rule: CompiledRule): boolean {
  return (
    rule.from !== null ||
    rule.to !== null ||
    rule.cc !== null ||
    rule.bcc !== null ||
    rule.subject !== null ||
    rule.hasAttachment !== null
  );
}

/**
 * Whether `levelMatches` can stand for how the engine matches `source`: a glob matched by comparing case-folded
 * text, or anything in ASCII. A glob matched by its `iu` regular expression counts code points (`?` is one emoji)
 * where levelMatches counts UTF-16 units: with non-ASCII on either side, the callers give their cautious answer.
 */
function comparable(source: string, levels: readonly string[]): boolean {
  const ascii = (text: string) => !/[^\x00-\x7f]/.test(text);
  return !folderGlobUsesRegex(source) || (ascii(source) && levels.every(ascii));
}

/** One folder level against one level of a glob (`*` and `?` stay within it); both passed through foldCase(). */
function levelMatches(glob: string, level: string): boolean {
  if (!/[*?]/.test(glob)) return glob === level;
  let re = "^";
  for (const part of glob.split(/([*?])/)) re += part === "*" ? "[^/]*" : part === "?" ? "[^/]" : escapeLiteral(part);
  return new RegExp(`${re}$`).test(level);
}

/** Does folder glob `source` match every name strictly below `levels`? Only `P/**` with P matching a prefix of it. */
function coversAllBelow(source: string, levels: readonly string[]): boolean {
  const g = foldCase(source).split("/");
  if (g[g.length - 1] !== "**") return false;
  const fixed = g.length - 1;
  if (fixed > 0 && !comparable(source, levels)) return false;
  if (fixed > levels.length) return false;
  for (let i = 0; i < fixed; i++) if (g[i] === "**" || !levelMatches(g[i]!, levels[i]!)) return false;
  return true;
}

/** Could folder glob `source` match some name strictly below `levels`? False only when it certainly cannot. */
function mayMatchBelow(source: string, levels: readonly string[]): boolean {
  const g = foldCase(source).split("/");
  if (!g.includes("**") && g.length <= levels.length) return false;
  if (!comparable(source, levels)) return true;
  for (let i = 0; i < Math.min(g.length, levels.length); i++) {
    if (g[i] === "**") return true;
    if (!levelMatches(g[i]!, levels[i]!)) return false;
  }
  return true;
}

function globs(kind: "folder" | "address" | "subject", list: readonly string[] | undefined): Glob[] | null {
  if (list === undefined) return null;
  return list.map((p) => compileGlob(kind, p));
}

/** `folded` must be case-folded already (see fold()). */
function anyMatch(list: readonly Glob[], folded: string): boolean {
  for (const g of list) if (g.testFolded(folded)) return true;
  return false;
}

function foldList(values: readonly string[] | undefined): readonly string[] | undefined {
  if (values === undefined) return undefined;
  // Each value folded once; the list itself kept when folding changes none of them.
  let out: string[] | null = null;
  for (let i = 0; i < values.length; i++) {
    const folded = foldCase(values[i]!);
    if (out === null && folded !== values[i]) out = values.slice(0, i);
    out?.push(folded);
  }
  return out ?? values;
}

/** Globs are case-insensitive (foldCase()): fold each string field once per evaluation, not once per rule. */
function fold(req: Request): Request {
  return {
    operation: req.operation,
    agent: req.agent,
    folder: typeof req.folder === "string" ? foldCase(req.folder) : req.folder,
    from: foldList(req.from),
    to: foldList(req.to),
    cc: foldList(req.cc),
    bcc: foldList(req.bcc),
    subject: req.subject === undefined ? undefined : foldCase(req.subject),
    hasAttachment: req.hasAttachment,
  };
}

/** A list field matches when any of its addresses matches any glob. */
function matchAny(globsOf: readonly Glob[] | null, values: readonly string[] | undefined): Tri {
  if (globsOf === null) return YES;
  if (values === undefined) return UNKNOWN;
  for (const v of values) if (anyMatch(globsOf, v)) return YES;
  return NO;
}

/**
 * From matches an allow or ask rule only when every author matches: a co-author must not ride along (RFC 5322 §3.6.2
 * allows several). A deny rule's from matches when any author does (`matchAny`).
 */
function matchEvery(globsOf: readonly Glob[] | null, values: readonly string[] | undefined): Tri {
  if (globsOf === null) return YES;
  if (values === undefined) return UNKNOWN;
  if (values.length === 0) return NO;
  for (const v of values) if (!anyMatch(globsOf, v)) return NO;
  return YES;
}

function describe(rule: RuleSpec): string {
  const parts: string[] = [];
  const list = (k: string, v: readonly string[] | undefined) => {
    if (v !== undefined) parts.push(`${k} ${v.map((x) => JSON.stringify(x)).join("|")}`);
  };
  list("folder", rule.folders);
  list("from", rule.from);
  list("to", rule.to);
  list("cc", rule.cc);
  list("bcc", rule.bcc);
  list("subject", rule.subject);
  if (rule.hasAttachment !== undefined) parts.push(`has_attachment=${rule.hasAttachment}`);
  list("agent", rule.agents);
  return parts.length ? parts.join(", ") : "no conditions";
}

export class Policy {
  readonly rules: readonly CompiledRule[];

  /** Compiles rules; throws GlobError for a malformed glob and Error for an unknown operation. */
  constructor(specs: readonly RuleSpec[]) {
    this.rules = specs.map((r, index) => {
      let ops = ALL_OPERATIONS_MASK;
      if (r.operations !== undefined) {
        ops = 0;
        for (const name of r.operations) {
          const expanded = expandOperation(name);
          if (!expanded) throw new Error(`unknown operation "${name}"`);
          ops |= operationMask(expanded);
        }
      }
      const rule: CompiledRule = {
        index,
        name: r.name,
        action: r.action,
        ops,
        agents: r.agents === undefined ? null : new Set(r.agents),
        folders: globs("folder", r.folders),
        from: globs("address", r.from),
        to: globs("address", r.to),
        cc: globs("address", r.cc),
        bcc: globs("address", r.bcc),
        subject: globs("subject", r.subject),
        hasAttachment: r.hasAttachment ?? null,
        unconditional:
          r.folders === undefined &&
          r.from === undefined &&
          r.to === undefined &&
          r.cc === undefined &&
          r.bcc === undefined &&
          r.subject === undefined &&
          r.hasAttachment === undefined,
        summary: describe(r),
      };
      return rule;
    });
  }

  /**
   * Tri-state match of one rule; pushes the fields it could not decide on to
   * `unknown`. Written without closures or allocation: it runs for every rule
   * of every evaluation.
   */
  private match(rule: CompiledRule, req: Request, unknown: Field[]): Tri {
    if ((rule.ops & operationBit(req.operation)) === 0) return NO;
    const mark = unknown.length;
    if (rule.agents !== null) {
      if (req.agent === undefined) unknown.push("agent");
      else if (req.agent === null || !rule.agents.has(req.agent)) return NO;
    }
    if (rule.folders !== null) {
      if (req.folder === null) return this.no(unknown, mark);
      if (req.folder === undefined) unknown.push("folder");
      else if (!anyMatch(rule.folders, req.folder)) return this.no(unknown, mark);
    }
    // An allow (or ask) rule needs every author, a deny rule any one: either way a co-author cannot carry a
    // message past the rules (docs/config.md "What the message fields mean").
    let t = rule.action === "deny" ? matchAny(rule.from, req.from) : matchEvery(rule.from, req.from);
    if (t === NO) return this.no(unknown, mark);
    if (t === UNKNOWN) unknown.push("from");
    t = matchAny(rule.to, req.to);
    if (t === NO) return this.no(unknown, mark);
    if (t === UNKNOWN) unknown.push("to");
    t = matchAny(rule.cc, req.cc);
    if (t === NO) return this.no(unknown, mark);
    if (t === UNKNOWN) unknown.push("cc");
    t = matchAny(rule.bcc, req.bcc);
    if (t === NO) return this.no(unknown, mark);
    if (t === UNKNOWN) unknown.push("bcc");
    if (rule.subject !== null) {
      if (req.subject === undefined) unknown.push("subject");
      else if (!anyMatch(rule.subject, req.subject)) return this.no(unknown, mark);
    }
    if (rule.hasAttachment !== null) {
      if (req.hasAttachment === undefined) unknown.push("hasAttachment");
      else if (req.hasAttachment !== rule.hasAttachment) return this.no(unknown, mark);
    }
    return unknown.length > mark ? UNKNOWN : YES;
  }

  /** A definite non-match: forget the unknown fields this rule had noted. */
  private no(unknown: Field[], mark: number): Tri {
    unknown.length = mark;
    return NO;
  }

  /** Decisions are immutable, so one object per (rule, operation) serves every evaluation. */
  private readonly decisions = new Map<number, Decision>();

  private decision(rule: CompiledRule | null, req: Request): Decision {
    const key = (rule ? rule.index + 1 : 0) * 32 + operationIndex(req.operation);
    let d = this.decisions.get(key);
    if (d === undefined) {
      d = Object.freeze(
        rule
          ? {
              action: rule.action,
              rule: rule.name,
              ruleIndex: rule.index,
              reason: `${req.operation} matched rule ${rule.index + 1} "${rule.name}" (${rule.summary})`,
            }
          : {
              action: "deny" as const,
              rule: null,
              ruleIndex: null,
              reason: `${req.operation}: no rule matched (default deny)`,
            },
      );
      this.decisions.set(key, d);
    }
    return d;
  }

  /**
   * Decides a request, or reports what it still depends on. When every rule
   * that could still match leads to the same action, that is a decision too:
   * the first such rule is named.
   */
  evaluatePartial(request: Request): Outcome {
    const req = fold(request);
    const unknown: Field[] = [];
    let candidates: CompiledRule[] | null = null;
    let terminal: CompiledRule | null = null;
    for (const rule of this.rules) {
      const m = this.match(rule, req, unknown);
      if (m === NO) continue;
      if (m === YES) {
        if (candidates === null) return { decided: true, decision: this.decision(rule, req) };
        terminal = rule;
        break;
      }
      (candidates ??= []).push(rule);
    }
    if (candidates === null) return { decided: true, decision: this.decision(null, req) };
    const needs = new Set<Field>(unknown);
    const possible = new Set<Action>(candidates.map((r) => r.action));
    possible.add(terminal ? terminal.action : "deny");
    if (possible.size > 1) return { decided: false, needs, possible };
    const first = candidates[0]!;
    const decision = this.decision(first, req);
    return {
      decided: true,
      decision: {
        ...decision,
        reason: `${decision.reason}; the same whatever ${[...needs].join(", ")} turn out to be`,
      },
    };
  }

  /** Decides a request; a request that depends on unknown fields is denied. */
  evaluate(req: Request): Decision {
    const outcome = this.evaluatePartial(req);
    if (outcome.decided) return outcome.decision;
    return {
      action: "deny",
      rule: null,
      ruleIndex: null,
      reason: `${req.operation}: undecided without ${[...outcome.needs].join(", ")} (denied)`,
    };
  }

  /** Could some message make `operation` in `folder` allowed (or ask) for this agent? */
  mayAllow(operation: Operation, folder: string | null, agent: string | null): boolean {
    const outcome = this.evaluatePartial({ operation, folder, agent });
    if (outcome.decided) return outcome.decision.action !== "deny";
    return outcome.possible.has("allow") || outcome.possible.has("ask");
  }

  /**
   * May the agent see this folder at all? A folder is listed only if some
   * operation on it can be allowed (docs/config.md "Operations").
   */
  folderVisible(folder: string, agent: string | null): boolean {
    for (const op of operationsOf(ALL_OPERATIONS_MASK)) {
      if (op === "mail:send") continue;
      if (this.mayAllow(op, folder, agent)) return true;
    }
    return false;
  }

  /**
   * Is every folder strictly below `folder` visible to the agent, whatever its name (of non-empty levels, as every
   * valid folder name has)? Decided from the rules alone,
   * so that DELETE and RENAME answer the same whether or not a hidden child exists (docs/imap.md). Conservative:
   * true only when, for some operation, the first rule that can match a name below `folder` is an allow (or ask)
   * rule that matches every name below it; partial allow rules before it are passed over, and so are deny rules
   * with message conditions (they deny only some messages). Anything else, or no rule, is false.
   */
  subtreeVisible(folder: string, agent: string | null): boolean {
    const levels = foldCase(folder).split("/");
    for (const op of operationsOf(ALL_OPERATIONS_MASK)) {
      if (op === "mail:send") continue;
      const bit = operationBit(op);
      for (const rule of this.rules) {
        if ((rule.ops & bit) === 0) continue;
        if (rule.agents !== null && (agent === null || !rule.agents.has(agent))) continue;
        const covers = rule.folders === null || rule.folders.some((g) => coversAllBelow(g.source, levels));
        if (!covers && !rule.folders!.some((g) => mayMatchBelow(g.source, levels))) continue;
        if (rule.action !== "deny") {
          if (covers) return true;
          continue;
        }
        if (!hasMessageConditions(rule)) break;
      }
    }
    return false;
  }

  /**
   * The rules that can apply to `operation` in `folder` for `agent`, in order, up to and including the first one
   * without message conditions (nothing after it can decide): the rules a per-message decision there can name.
   * Folder globs are tested on `folder` as given. Empty when no rule matches the operation, agent and folder.
   */
  candidateRules(operation: Operation, folder: string, agent: string | null): readonly CandidateRule[] {
    const bit = operationBit(operation);
    const out: CompiledRule[] = [];
    const folded = foldCase(folder);
    for (const rule of this.rules) {
      if ((rule.ops & bit) === 0) continue;
      if (rule.agents !== null && (agent === null || !rule.agents.has(agent))) continue;
      if (rule.folders !== null && !rule.folders.some((g) => g.testFolded(folded))) continue;
      out.push(rule);
      if (!hasMessageConditions(rule)) break;
    }
    return out;
  }

  /**
   * The message fields that decide `operation` in `folder`, or an empty set
   * when the folder alone decides it. A non-empty answer for mail:read means
   * the IMAP proxy must filter messages one by one.
   */
  messageDependence(operation: Operation, folder: string, agent: string | null): ReadonlySet<Field> {
    const outcome = this.evaluatePartial({ operation, folder, agent });
    return outcome.decided ? new Set() : outcome.needs;
  }

  /** Rules that can never match: an earlier rule without conditions covers all their operations and agents. */
  shadowed(): ShadowedRule[] {
    const out: ShadowedRule[] = [];
    for (const rule of this.rules) {
      for (const earlier of this.rules) {
        if (earlier.index >= rule.index) break;
        if (!earlier.unconditional) continue;
        if ((rule.ops & ~earlier.ops) !== 0) continue;
        const agentsCovered =
          earlier.agents === null || (rule.agents !== null && [...rule.agents].every((a) => earlier.agents!.has(a)));
        if (!agentsCovered) continue;
        out.push({ index: rule.index, name: rule.name, by: earlier.name, byIndex: earlier.index });
        break;
      }
    }
    return out;
  }
}

export function compilePolicy(rules: readonly RuleSpec[]): Policy {
  return new Policy(rules);
}
