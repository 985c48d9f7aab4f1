/**
 * Allocator tuning for the long-running proxy process (README, "Command line").
 *
 * Bun allocates with mimalloc, which by default hands freed pages back to the kernel 10 ms after they are freed.
 * A proxy frees a buffer for nearly every socket read, so with that default it kept returning pages and faulting
 * them back in: about a third of the IMAP proxy's CPU in `UID FETCH` relays and a fifth of the SMTP proxy's per
 * message (docs/benchmarks.md, "Allocator"). mimalloc reads its options from the environment once, when the
 * process starts, so `mailgator serve` re-executes itself (same PID, same arguments) with the option set.
 *
 * The delay is PURGE_DELAY_MS, not "never" (-1, the first setting): under traffic a freed page is reused long
 * before a second has passed, so the faulting stays away, and pages unused for a second go back to the kernel.
 * With -1 the process never returned any: over a soak of 100 sessions RSS rose for as long as the traffic lasted
 * (90 → 104 MiB in 4 minutes) and stayed there when idle, while the JavaScript heap went back to 8 MiB
 * (docs/reliability.md, "Memory").
 *
 * Bun's mimalloc also purges the free space inside partly used pages ("holes") from a background thread; with that
 * on, the IMAP relay spent 17–22 µs of CPU per 4 KB message against 11–13 µs with it off, and the soak 0.96 against
 * 0.84 ms per command, for RSS about 15 MiB (13 %) lower under traffic. Both settings keep RSS flat over a soak
 * (docs/reliability.md, "Memory"), so `serve` turns it off (PURGE_HOLES).
 *
 * A value the operator already set is left alone, variable by variable; that is also how to opt out
 * (`MIMALLOC_PURGE_DELAY=10`, mimalloc's default, or `-1`; `MIMALLOC_PURGE_HOLES=1`).
 */

/** How long mimalloc keeps a freed page before returning it to the kernel, in milliseconds. */
export const PURGE_DELAY_MS = 1000;

/** Bun's mimalloc option for purging free space inside partly used pages: off (0). */
export const PURGE_HOLES = 0;

/** The variables set, and their values. */
export const ALLOCATOR_ENV: Readonly<Record<string, string>> = {
  MIMALLOC_PURGE_DELAY: String(PURGE_DELAY_MS),
  MIMALLOC_PURGE_HOLES: String(PURGE_HOLES),
};

/** True when every variable of ALLOCATOR_ENV is set (to any value: the operator's choice wins). */
export function allocatorTuned(env: NodeJS.ProcessEnv = process.env): boolean {
  return Object.keys(ALLOCATOR_ENV).every((name) => env[name] !== undefined);
}

/**
 * Re-executes this process with ALLOCATOR_ENV added, unless already tuned; returns only when nothing needed
 * doing or the re-execution failed (then the process runs on untuned, with a warning). Works both for the
 * compiled executable (whose argv[1] is its embedded entry point) and under `bun`.
 */
export function tuneAllocator(): void {
  if (allocatorTuned() || process.execve === undefined) return;
  const compiled = Bun.main.startsWith("/$bunfs/");
  const args = compiled
    ? [process.execPath, ...process.argv.slice(2)]
    : [process.execPath, ...process.execArgv, ...process.argv.slice(1)];
  const env: Record<string, string> = {};
  for (const [name, value] of Object.entries(process.env)) if (value !== undefined) env[name] = value;
  for (const [name, value] of Object.entries(ALLOCATOR_ENV)) env[name] ??= value;
  // Under `bun`, execArgv already holds the flags BUN_OPTIONS gave; passed both ways they would apply twice.
  if (!compiled) delete env["BUN_OPTIONS"];
  try {
    process.execve(process.execPath, args, env);
  } catch (e) {
    // Only slower, not less safe: run on with the allocator's defaults.
    const why = (e as Error).message;
    process.stderr.write(
      `mailgator: could not re-execute with the allocator tuned (${why}); running with its defaults\n`,
    );
  }
}
