/**
 * The OAuth2 endpoints and scopes of the providers Mailgator knows (docs/accounts.md "Providers"). An account with
 * `provider = "custom"` gives its own.
 */

export type OAuth2Provider = "google" | "microsoft" | "custom";
export type OAuth2Grant = "authorization_code" | "client_credentials";

export interface ProviderEndpoints {
  readonly authorizeUrl: string | null;
  readonly tokenUrl: string;
  readonly deviceUrl: string | null;
  readonly scopes: readonly string[];
}

/** Google: one scope covers IMAP and SMTP (https://developers.google.com/workspace/gmail/imap/xoauth2-protocol). */
export const GOOGLE: ProviderEndpoints = {
  authorizeUrl: "https://accounts.google.com/o/oauth2/v2/auth",
  tokenUrl: "https://oauth2.googleapis.com/token",
  deviceUrl: "https://oauth2.googleapis.com/device/code",
  scopes: ["https://mail.google.com/"],
};

/** Microsoft's delegated scopes for IMAP and SMTP AUTH; offline_access asks for a refresh token. */
export const MICROSOFT_DELEGATED_SCOPES: readonly string[] = [
  "https://outlook.office.com/IMAP.AccessAsUser.All",
  "https://outlook.office.com/SMTP.Send",
  "offline_access",
];

/** Microsoft app-only (client credentials): the app's granted IMAP.AccessAsApp / SMTP.SendAsApp roles. */
export const MICROSOFT_APP_SCOPES: readonly string[] = ["https://outlook.office365.com/.default"];

/** The tenant a delegated Microsoft login uses when the config names none: work, school and personal accounts. */
export const MICROSOFT_DEFAULT_TENANT = "common";

/** Tenant aliases that name no directory: app-only tokens need the tenant's id or domain. */
export const MICROSOFT_TENANT_ALIASES: readonly string[] = ["common", "organizations", "consumers"];

/** The issuer Google names in its authorization redirects (`iss`, RFC 9207). */
export const GOOGLE_ISSUER = "https://accounts.google.com";

/** A Microsoft tenant given as its directory id, the only form its issuer name (`/{id}/v2.0`) is built from. */
const TENANT_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * The issuer an authorization redirect must name when it carries `iss` (RFC 9207 §2.4), where Mailgator knows it:
 * Google's, and a Microsoft tenant's given by its id; null for a custom provider (no discovery document is read)
 * and for Microsoft's shared tenants and domain names, whose issuer depends on the account that logs in.
 */
export function issuerOf(provider: OAuth2Provider, tenant: string | null): string | null {
  if (provider === "google") return GOOGLE_ISSUER;
  if (provider === "microsoft" && tenant !== null && TENANT_ID.test(tenant))
    return `https://login.microsoftonline.com/${tenant.toLowerCase()}/v2.0`;
  return null;
}

export function microsoft(tenant: string, grant: OAuth2Grant): ProviderEndpoints {
  const base = `https://login.microsoftonline.com/${encodeURIComponent(tenant)}/oauth2/v2.0`;
  return {
    authorizeUrl: `${base}/authorize`,
    tokenUrl: `${base}/token`,
    deviceUrl: `${base}/devicecode`,
    scopes: grant === "client_credentials" ? MICROSOFT_APP_SCOPES : MICROSOFT_DELEGATED_SCOPES,
  };
}
