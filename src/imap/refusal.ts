/** A refusal the agent gets as a tagged reply; command handlers throw it, the session writes it. */
export class Refusal extends Error {
  readonly status: "NO" | "BAD";
  readonly code: string | null;
  constructor(status: "NO" | "BAD", code: string | null, text: string) {
    super(text);
    this.status = status;
    this.code = code;
  }
}
