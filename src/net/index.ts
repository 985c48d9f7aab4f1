/** Network plumbing shared by the IMAP and SMTP proxies: listeners, upstream connections, TLS, line framing. */
export { Connection, normalizeAddress } from "./connection.ts";
export { listen, loadIdentity, SHUTDOWN_GRACE_MS, type ListenOptions, type Listener, type ListenTls, type TlsIdentity } from "./listener.ts";
export { connectUpstream, readCaFile, tlsOptions, UpstreamError, type UpstreamTarget, type UpstreamTls } from "./upstream.ts";
export { LineFramer, type LineEvent } from "./lines.ts";
export { FailureThrottle, type ThrottleLimits } from "./throttle.ts";
export { ipAllowed } from "./ip.ts";
