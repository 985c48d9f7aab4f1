/**
 * Config errors a person can act on: where (file:line:column, or the key path),
 * what was expected, what was found. Never a secret's value.
 */

export interface ConfigProblem {
  /** Key path such as `rules[1].action`, when the problem is in a value. */
  readonly path?: string | undefined;
  readonly line?: number | undefined;
  readonly column?: number | undefined;
  readonly message: string;
  /** The offending source lines with a caret, for syntax errors. */
  readonly excerpt?: string | undefined;
}

export class ConfigError extends Error {
  override name = "ConfigError";
  readonly file: string;
  readonly problems: readonly ConfigProblem[];

  constructor(file: string, problems: readonly ConfigProblem[]) {
    super(formatProblems(file, problems));
    this.file = file;
    this.problems = problems;
  }
}

export function formatProblem(file: string, p: ConfigProblem): string {
  let where = file;
  if (p.line !== undefined) where += `:${p.line}${p.column !== undefined ? `:${p.column}` : ""}`;
  const head = `${where}: ${p.path ? `${p.path}: ` : ""}${p.message}`;
  return p.excerpt ? `${head}\n${p.excerpt}` : head;
}

export function formatProblems(file: string, problems: readonly ConfigProblem[]): string {
  const n = problems.length;
  const list = problems.map((p) => `  ${formatProblem(file, p).replaceAll("\n", "\n  ")}`).join("\n");
  return `config error${n === 1 ? "" : `s (${n})`}:\n${list}`;
}
