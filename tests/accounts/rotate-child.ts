// Child process of tests/accounts/oauth.test.ts: forces one refresh of account `main` (the server rotates the
// refresh token), prints "rotated" once credentialFor has returned, and waits to be killed with SIGKILL.
import { AccountCredentials } from "../../src/accounts/index.ts";
import { loadConfig } from "../../src/config/index.ts";
import { SealedStore } from "../../src/state/store.ts";

const config = loadConfig(process.argv[2]!);
const store = SealedStore.open(config.state.path, { secretsFile: config.state.secretsFile, env: {}, create: false })!;
const credentials = new AccountCredentials({ config, store });
const first = await credentials.credentialFor("main");
if (first.kind !== "oauth2") throw new Error("expected an oauth2 account");
credentials.reportRejected("main", first.accessToken);
await credentials.credentialFor("main");
console.log("rotated");
await new Promise(() => {});
