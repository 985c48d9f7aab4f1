/**
 * Logged-in sessions per agent (vault mode) or per upstream login name (pass-through mode), for
 * `max_sessions_per_agent` (docs/config.md, `[limits]`). A place is taken once the login is known to be good and
 * given back when the session ends; taking it and checking the count happen in one step, so two logins racing
 * for the last place cannot both get it.
 */

/**
 * A pass-through login as one client: its name without case, as the mail servers in use treat logins (Dovecot,
 * Postfix's SASL, Gmail and Microsoft 365 all accept `Me@X` for `me@x`). What is counted per login, the sessions
 * under `max_sessions_per_agent` and the `[[quotas]]` windows and `agents` entries (docs/quotas.md), uses this one
 * key, so a login typed in another case is the same client and gets no fresh count. So do the audit log's agent
 * filter (`mailgator audit --agent`, docs/audit.md) and the check that no two vault agent names differ only in case.
 */
export function loginKey(login: string): string {
  return login.toLowerCase();
}

export class SessionCounter {
  readonly limit: number;
  readonly #counts = new Map<string, number>();

  constructor(limit: number) {
    this.limit = limit;
  }

  /** Sessions `key` holds now. */
  count(key: string): number {
    return this.#counts.get(key) ?? 0;
  }

  /** Takes a place for `key`; null when it already holds `limit`. The returned function gives it back, once. */
  acquire(key: string): (() => void) | null {
    const n = this.#counts.get(key) ?? 0;
    if (n >= this.limit) return null;
    this.#counts.set(key, n + 1);
    let held = true;
    return () => {
      if (!held) return;
      held = false;
      const left = (this.#counts.get(key) ?? 1) - 1;
      if (left <= 0) this.#counts.delete(key);
      else this.#counts.set(key, left);
    };
  }

  /**
   * What a session is counted under: a vault agent by its name as configured (names are compared exactly, as at
   * login), a pass-through login by its name without case, as mail servers usually treat logins.
   */
  static key(agent: string | null, login: string): string {
    return agent !== null ? `agent:${agent}` : `login:${loginKey(login)}`;
  }
}
