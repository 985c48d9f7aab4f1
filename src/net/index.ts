/** Network plumbing shared by the IMAP and SMTP proxies: listeners, upstream connections, TLS, line framing. */
export { Connection, END_GRACE_MS, normalizeAddress, WRITE_PIECE } from "./connection.ts";
export { MAX_LOGIN_NAME_BYTES, MAX_LOGIN_PASSWORD_BYTES, overlongCredentials } from "./credentials.ts";
export { addressKey, ipAllowed } from "./ip.ts";
export { type LineEvent, LineFramer } from "./lines.ts";
export {
  type Listener,
  type ListenOptions,
  type ListenTls,
  listen,
  loadIdentity,
  type Overload,
  SHUTDOWN_GRACE_MS,
  type TlsIdentity,
} from "./listener.ts";
export {
  LOGIN_LOCKOUT,
  type Lock,
  type LockoutLimits,
  LoginLockout,
  lockDetail,
  lockedReason,
  lockoutName,
  lockStartedReason,
} from "./lockout.ts";
export { overloadEvent } from "./overload.ts";
export { SessionCounter } from "./sessions.ts";
export { FailureThrottle, failureDelay, type ThrottleLimits } from "./throttle.ts";
export {
  connectUpstream,
  readCaFile,
  sameUpstream,
  startUpstreamTls,
  tlsOptions,
  UPSTREAM_HINTS,
  UpstreamError,
  type UpstreamTarget,
  type UpstreamTls,
  upstreamHint,
} from "./upstream.ts";
