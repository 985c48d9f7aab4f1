/** The AccountCredentials of a running proxy: opens the state database when an account uses OAuth2. */

import type { AuditEvent } from "../audit/index.ts";
import type { Config } from "../config/index.ts";
import { SealedStore } from "../state/store.ts";
import { AccountCredentials, type CredentialsOptions } from "./credentials.ts";

export interface OpenOptions {
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly audit?: ((event: AuditEvent) => void) | undefined;
  readonly log?: CredentialsOptions["log"];
  readonly fetch?: typeof fetch | undefined;
}

/**
 * Throws SecretsKeyError when the key is missing or wrong while sealed records exist (a startup error: a silent new
 * key would turn every stored login into a re-login). The caller closes `store` on shutdown.
 */
export function openAccountCredentials(
  config: Config,
  options: OpenOptions,
): { credentials: AccountCredentials; store: SealedStore | null } {
  const needsState = Object.values(config.accounts).some((a) => a.auth === "oauth2");
  const store = needsState
    ? SealedStore.open(config.state.path, { secretsFile: config.state.secretsFile, env: options.env, create: true })
    : null;
  try {
    const credentials = new AccountCredentials({
      config,
      store,
      audit: options.audit,
      log: options.log,
      fetch: options.fetch,
    });
    return { credentials, store };
  } catch (e) {
    store?.close();
    throw e;
  }
}
