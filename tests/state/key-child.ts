// Child process of tests/state/key-file-creation.test.ts: creates the secrets key file argv[2] as serve does on a new
// state database (loadSecretsKey, may create), and prints "ok" or the error's name and message.
import { loadSecretsKey } from "../../src/state/key.ts";

try {
  loadSecretsKey({ file: process.argv[2]!, env: {}, mayCreate: true });
  console.log("ok");
} catch (e) {
  console.log(`${(e as Error).name}: ${(e as Error).message}`);
}
