/**
 * The selected-mailbox model when upstream tells a new message's UID out of order: a flag change that carries the UID
 * of the second of two arrivals (RFC 3501 §7.4.2; servers add the UID to it during UID commands) before the first
 * arrival's UID is known, and then the first arrival's EXPUNGE. The second arrival must still be learned and admitted:
 * before, `known` stayed below it for good, every sync asked upstream for it again, and the agent never heard of it
 * until some later message arrived.
 */
import { expect, test } from "bun:test";
import { SelectedMailbox } from "../../src/imap/mailbox.ts";
import { VisibleSet } from "../../src/imap/view.ts";

for (const filtered of [false, true]) {
  const kind = filtered ? "filtered" : "unfiltered";
  test(`an arrival learned before an earlier one that is then expunged is admitted (${kind})`, () => {
    const box = new SelectedMailbox("INBOX", "INBOX", true, [1, 2], filtered ? new VisibleSet([1, 2], 2) : null);
    box.onExists(4); // two arrivals, UIDs unknown
    box.learnUid(4, 9); // another session's flag change of the second, with its UID
    box.onExpunge(3); // the first is expunged before its UID was learned
    box.learnUid(3, 9); // the sync's `UID FETCH 3:* (UID)`
    expect(box.hasUnknown).toBe(false);
    if (filtered) {
      expect(box.unclassified()).toEqual([9]);
      box.visible!.extend([9], 9);
    }
    expect(box.admitNew()).toBe(3);
    expect(box.allUids()).toEqual([1, 2, 9]);
  });
}
