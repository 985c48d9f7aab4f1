/**
 * scripts/bench/stress.ts reads imaptest's stress output (docs/benchmarks.md "Write commands: imaptest's stress
 * mode"): the figures it prints must be the ones imaptest reported. The text below has the shape of imaptest's
 * output (release-2.3): a report every 10 seconds ending in a `ms/cmd avg` line, then `Totals:`.
 */

import { expect, test } from "bun:test";
import { parseStress } from "../../scripts/bench/stress.ts";

const HEAD = "Logi List Stat Sele Fetc Fet2 Stor Dele Expu Appe Logo ";
const PERCENT =
  "100%  50%  50% 100% 100% 100%  50% 100% 100% 100% 100% \n                          30%                  5%      ";

const OUTPUT = [
  HEAD,
  PERCENT,
  " 159   76   77  157  156  231   54   76  152  118  149  10/ 10",
  "   1    1    4   12    3    7   19   24   29   51    0 ms/cmd avg",
  HEAD,
  PERCENT,
  " 157   85   73  157  159  245   59   81  160  124  157  10/ 10",
  "   3    1    2   10    3    5   17   22   27   45    0 ms/cmd avg",
  "Error: stress-1@mailgator.test[3]: Keyword used without being in FLAGS: $Label5",
  "",
  "Totals:",
  HEAD,
  PERCENT,
  "1000  500  400 1000 1000 1500  300  600 1000  700 1000 ",
].join("\n");

test("commands per second from the totals, latency as the mean of the reports, errors counted", () => {
  const r = parseStress(OUTPUT, 20);
  expect(r.commandsPerSecond).toBe(9000 / 20);
  expect(r.totals["Appe"]).toBe(700);
  expect(r.latencyMs["Logi"]).toBe(2);
  expect(r.latencyMs["Stor"]).toBe(18);
  expect(r.latencyMs["Dele"]).toBe(23);
  expect(r.latencyMs["Expu"]).toBe(28);
  expect(r.latencyMs["Appe"]).toBe(48);
  expect(r.errors).toEqual(["Error: stress-1@mailgator.test[3]: Keyword used without being in FLAGS: $Label5"]);
});

test("a run that did not reach its totals, or printed no report, is not a figure", () => {
  expect(() => parseStress(OUTPUT.slice(0, OUTPUT.indexOf("Totals:")), 20)).toThrow("no Totals:");
  expect(() => parseStress(["Totals:", HEAD, PERCENT, "1 2 3"].join("\n"), 20)).toThrow("no latency report");
  expect(() => parseStress(["Totals:", HEAD, PERCENT].join("\n"), 20)).toThrow("has no counts");
});
