/** A lock file (O_EXCL) so that two starts or stops on one runtime folder take turns. */
import { closeSync, openSync, readFileSync, statSync, unlinkSync, writeSync } from "node:fs";

/** Runs `action` holding `path`; a lock left by a dead process is taken over. */
export async function withLock<T>(path: string, action: () => Promise<T>, timeoutMs = 120_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const fd = openSync(path, "wx");
      writeSync(fd, `${process.pid}\n`);
      closeSync(fd);
      break;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
      if (!holderAlive(path)) {
        try {
          unlinkSync(path);
        } catch {
          // Someone else took it over first.
        }
        continue;
      }
      if (Date.now() > deadline)
        throw new Error(`upstreams: ${path} is held by pid ${readHolder(path)} for over ${timeoutMs} ms`);
      await Bun.sleep(100);
    }
  }
  try {
    return await action();
  } finally {
    try {
      unlinkSync(path);
    } catch {
      // Already gone.
    }
  }
}

function readHolder(path: string): number {
  try {
    return Number(readFileSync(path, "utf8").trim());
  } catch {
    return 0;
  }
}

function holderAlive(path: string): boolean {
  const pid = readHolder(path);
  // An empty file is a lock being written right now, or one whose writer died in between.
  if (pid === 0) {
    try {
      return Date.now() - statSync(path).mtimeMs < 5000;
    } catch {
      return false;
    }
  }
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
