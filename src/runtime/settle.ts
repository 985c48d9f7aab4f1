/**
 * Bounded waits of the shutdown sequence (docs/reliability.md "Shutdown"): what is under way gets a grace, and
 * past it the caller cuts it and moves on.
 */

/** Whether every one of `promises` settles within `ms` (a rejection counts as settled). */
export async function settledWithin(promises: Iterable<Promise<unknown>>, ms: number): Promise<boolean> {
  const all = [...promises];
  if (all.length === 0) return true;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  try {
    return await Promise.race([Promise.allSettled(all).then(() => true as const), late]);
  } finally {
    clearTimeout(timer);
  }
}
