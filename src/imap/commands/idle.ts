/**
 * IDLE (RFC 2177), run by the proxy: the agent's IDLE is answered locally while a separate IDLE runs upstream.
 * When upstream reports new messages, the proxy ends its IDLE, learns their UIDs and classifies them in a filtered
 * folder, reports the visible ones, and idles again (docs/protocol.md §3 "IDLE flow"). Upstream IDLE is renewed well
 * before the 30-minute inactivity timeout servers may apply (RFC 2177 §3); with no mailbox selected there is nothing
 * to idle on, and a NOOP upstream at the same interval keeps the session from that timeout instead.
 */

import { UpstreamError } from "../../net/index.ts";
import { IDLE_RENEW_MS } from "../limits.ts";
import { Refusal } from "../refusal.ts";
import { type FramerEvent, isIdleDone } from "../wire/index.ts";
import type { CommandOf, Session } from "./context.ts";
import { relayUpdate } from "./shared.ts";

export async function idle(s: Session, cmd: CommandOf<"IDLE">): Promise<void> {
  const tag = cmd.tag;
  s.sendText("+ idling");
  s.flush();
  s.expectRawLine();
  const agentLine = s.nextEvent();
  let ended: FramerEvent | null | undefined;
  // The wait under way upstream (`Wake`) ends when the agent's line comes: one reaction on `agentLine` for the
  // whole IDLE, not one more per renewal or arrival (a race with it each time would keep every one until DONE).
  const wake: Wake = { now: null };
  void agentLine.then((ev) => {
    ended = ev;
    wake.now?.();
  });
  const box = s.box;
  if (s.up === null) {
    ended = await agentLine;
  } else {
    try {
      if (box === null) await keepAlive(s, wake, () => ended !== undefined);
      else await idleUpstream(s, box, wake, () => ended !== undefined);
    } catch (error) {
      // The IDLE failed inside (a refusal or a classification error; a lost upstream ends the session with BYE).
      // The agent is still idling and its next line is its DONE (RFC 2177 §3): it is read as such before the error
      // is answered, or it would be left for the command loop and the agent's next command taken for it and dropped.
      if (!(error instanceof UpstreamError) && !s.closed && ended === undefined) await agentLine;
      throw error;
    }
  }
  if (ended === undefined) ended = await agentLine;
  if (ended === null) return;
  if (ended.kind === "line" && isIdleDone(ended.line)) return s.tagged(tag, "OK", null, "Idle completed");
  // A refusal, with its deny row (docs/audit.md "What a row records": every refusal is a row).
  throw new Refusal("BAD", null, "Expected DONE");
}

/** Ends the wait of the loop upstream; set while it waits, called when the agent's line comes (or the session ends). */
interface Wake {
  now: (() => void) | null;
}

/** How often the proxy's own IDLE upstream is renewed (IDLE_RENEW_MS; shorter in tests). */
function renewMs(s: Session): number {
  return s.ctx.timeouts.idleRenewMs ?? IDLE_RENEW_MS;
}

/**
 * No mailbox selected: upstream has nothing to report, but would log out a session silent for its inactivity
 * timeout (30 minutes, RFC 9051 §5.4) while the agent's IDLE may last up to `idle_command_timeout`: a NOOP upstream
 * at every renewal until `agentDone()`.
 */
async function keepAlive(s: Session, wake: Wake, agentDone: () => boolean): Promise<void> {
  while (!agentDone() && !s.closed) {
    await waitFor(wake, renewMs(s));
    if (agentDone() || s.closed) return;
    await s.upstreamRun({ name: "NOOP" }, () => {});
  }
}

/** Waits until `ms` have passed or `wake.now` is called. */
async function waitFor(wake: Wake, ms: number): Promise<void> {
  let timer!: ReturnType<typeof setTimeout>;
  await new Promise<void>((resolve) => {
    wake.now = resolve;
    timer = setTimeout(resolve, ms);
  });
  clearTimeout(timer);
  wake.now = null;
}

/** Idles upstream until `agentDone()` (the agent's line came) or the session ends, renewing and syncing meanwhile. */
async function idleUpstream(
  s: Session,
  box: NonNullable<Session["box"]>,
  wake: Wake,
  agentDone: () => boolean,
): Promise<void> {
  // Arrivals upstream reports during a sync (in reply to the proxy's own UID FETCH or SEARCH) come after that sync
  // learned the new UIDs, and upstream does not report them again in the IDLE that follows.
  let arrivals = box.arrivals;
  await s.sync(true);
  s.flush();
  while (!agentDone() && !s.closed) {
    // Something to learn (an arrival): the wait ends now, or is not begun.
    let changed = false;
    const poke = (): void => {
      changed = true;
      wake.now?.();
    };
    const up = s.up;
    if (up === null) return;
    const handle = await up.idle((r) => {
      // After a reload nothing more is relayed unless the view still stands (else the session has ended).
      if (!s.followReload()) return;
      if (s.model(r)) {
        if (r.type === "EXPUNGE") {
          for (const k of box.takeExpunges()) s.sendText(`* ${k} EXPUNGE`);
        } else if (r.type === "EXISTS" && box.hasUnknown) {
          poke();
        }
        return;
      }
      relayUpdate(s, r);
      // Upstream made the folder read-only (model above): the idling agent is told now (RFC 3501 §7.1).
      s.tellReadOnly();
    });
    // An arrival reported since the last sync began and not learned by it: synced now, not at the next EXISTS.
    if (box.hasUnknown && box.arrivals !== arrivals) poke();
    if (!changed && !agentDone() && !s.closed) await waitFor(wake, renewMs(s));
    await handle.done();
    // The agent has gone: nothing to learn or tell it (its session may be kept for the next login, unchanged).
    if (s.closed) break;
    arrivals = box.arrivals;
    await s.sync(true);
    s.flush();
  }
}
