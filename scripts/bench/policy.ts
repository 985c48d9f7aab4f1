/**
 * Policy evaluations per second with 20- and 200-rule configs. The request
 * mix matches realistic traffic: most requests fall through many rules before
 * one matches (the worst case for first-match), with message fields known.
 *
 *   bun scripts/bench/policy.ts [--seconds 2]
 */

import { compilePolicy, type Request, type RuleSpec } from "../../src/policy/index.ts";
import { benchOptions } from "./args.ts";

const seconds = benchOptions(process.argv.slice(2), "bun scripts/bench/policy.ts [--seconds 2]", {
  values: ["seconds"],
}).number("seconds", 2);

function rules(n: number): RuleSpec[] {
  const out: RuleSpec[] = [];
  for (let i = 0; i < n - 1; i++) {
    const kind = i % 4;
    if (kind === 0)
      out.push({
        name: `r${i}`,
        action: "allow",
        folders: [`Projects/p${i}/**`],
        from: [`*@client${i}.test`],
        operations: ["read"],
      });
    else if (kind === 1) out.push({ name: `r${i}`, action: "deny", folders: ["INBOX"], subject: [`*secret-${i}*`] });
    else if (kind === 2)
      out.push({
        name: `r${i}`,
        action: "allow",
        to: [`team${i}@corp.test`, `*@dept${i}.corp.test`],
        operations: ["send"],
      });
    else
      out.push({
        name: `r${i}`,
        action: "allow",
        folders: [`Archive/${2000 + i}`],
        operations: ["mail:read", "mail:flag"],
      });
  }
  out.push({ name: "deny all", action: "deny" });
  return out;
}

const requests: Request[] = [
  {
    operation: "mail:read",
    folder: "INBOX",
    agent: null,
    from: ["notifications@shop.test"],
    to: ["me@corp.test"],
    cc: [],
    subject: "Your order has shipped",
    hasAttachment: false,
  },
  {
    operation: "mail:send",
    folder: null,
    agent: null,
    from: ["me@corp.test"],
    to: ["someone@corp.test"],
    cc: [],
    bcc: [],
    subject: "Hello",
    hasAttachment: false,
  },
  {
    operation: "mail:flag",
    folder: "Archive/2003",
    agent: null,
    from: ["boss@corp.test"],
    to: ["me@corp.test"],
    cc: [],
    subject: "Re: plan",
    hasAttachment: true,
  },
  { operation: "folder:read", folder: "Projects/p4/notes", agent: null },
];

function measure(n: number): number {
  const policy = compilePolicy(rules(n));
  let count = 0;
  let sink = 0;
  const deadline = performance.now() + seconds * 1000;
  while (performance.now() < deadline) {
    for (let i = 0; i < 10_000; i++) {
      const d = policy.evaluate(requests[i & 3]!);
      sink += d.ruleIndex ?? 0;
    }
    count += 10_000;
  }
  if (sink < 0) console.log(sink);
  return count / seconds;
}

measure(20); // warm-up: let the JIT settle
for (const n of [20, 200]) {
  const perSecond = measure(n);
  console.log(`policy  ${String(n).padStart(3)} rules: ${Math.round(perSecond).toLocaleString("en-US")} evaluations/s`);
}
