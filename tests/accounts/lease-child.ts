// Child process of tests/accounts/refresh-lease.test.ts: one process on the state database of the config in argv[2]
// (`mailgator serve` or `approvals approve` in miniature). It takes the cached token of account `mail`, marks it
// refused by the upstream (so the next login refreshes), prints "ready", and on a line "go" on stdin asks for a
// token again and prints one line of JSON: the access token it got (a test server's token), or its error, and the
// audit rows it wrote; then it exits. With "hold-lease" as argv[3] it only takes the refresh lease of `mail`, prints
// "leased" and waits to be killed: a holder that died mid-refresh.
import { AccountCredentials } from "../../src/accounts/index.ts";
import { leaseOwner, takeLease } from "../../src/accounts/lease.ts";
import type { AuditEvent } from "../../src/audit/index.ts";
import { loadConfig } from "../../src/config/index.ts";
import { SealedStore } from "../../src/state/store.ts";

const config = loadConfig(process.argv[2]!);
const store = SealedStore.open(config.state.path, { secretsFile: config.state.secretsFile, env: {}, create: false })!;
if (process.argv[3] === "hold-lease") {
  if (takeLease(store, "mail", leaseOwner(), Date.now()) !== null) throw new Error("the lease is held");
  console.log("leased");
  await new Promise(() => {});
}
const audited: AuditEvent[] = [];
const quiet = { error: () => {}, warn: () => {}, info: () => {} };
const credentials = new AccountCredentials({ config, store, log: quiet, audit: (e) => audited.push(e) });
const first = await credentials.credentialFor("mail");
if (first.kind !== "oauth2") throw new Error("expected an oauth2 account");
credentials.reportRejected("mail", first.accessToken);
console.log("ready");
for await (const chunk of process.stdin) {
  if (!String(chunk).includes("go")) continue;
  let result: { accessToken?: string; error?: string };
  try {
    const credential = await credentials.credentialFor("mail");
    result = { accessToken: credential.kind === "oauth2" ? credential.accessToken : "" };
  } catch (e) {
    result = { error: (e as Error).name };
  }
  await credentials.settled();
  console.log(JSON.stringify({ ...result, audited: audited.length }));
  store.close();
  process.exit(0);
}
