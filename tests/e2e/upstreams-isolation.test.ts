// The second half of the parallel-isolation check; the first is in upstreams.test.ts.
import { defineIsolationTest } from "../fixtures/isolation.ts";

defineIsolationTest("b");
