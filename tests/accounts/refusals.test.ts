/**
 * AccountRefusals (src/accounts/refusals.ts): a vault account whose login the upstream server refused is not tried
 * again for ACCOUNT_REFUSAL_HOLD_MS; at the end of the hold it is, and each key is held on its own.
 */
import { expect, test } from "bun:test";
import { ACCOUNT_REFUSAL_HOLD_MS, AccountRefusals } from "../../src/accounts/refusals.ts";

test("held until ACCOUNT_REFUSAL_HOLD_MS have passed, not one millisecond more; keys apart", () => {
  let now = 1_000;
  const refusals = new AccountRefusals(ACCOUNT_REFUSAL_HOLD_MS, () => now);
  expect(refusals.heldFor("a")).toBe(0);
  refusals.refused("a");
  expect(refusals.heldFor("a")).toBe(ACCOUNT_REFUSAL_HOLD_MS);
  expect(refusals.heldFor("b")).toBe(0);
  now += ACCOUNT_REFUSAL_HOLD_MS - 1;
  expect(refusals.heldFor("a")).toBe(1);
  now += 1;
  expect(refusals.heldFor("a")).toBe(0);
  // Refused again: a new hold from then.
  refusals.refused("a");
  now += ACCOUNT_REFUSAL_HOLD_MS / 2;
  refusals.refused("b");
  expect(refusals.heldFor("a")).toBe(ACCOUNT_REFUSAL_HOLD_MS / 2);
  expect(refusals.heldFor("b")).toBe(ACCOUNT_REFUSAL_HOLD_MS);
});
