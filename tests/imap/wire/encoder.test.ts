/** Encoder output without copies (`takeViews` / `recycle`, the session's batch path) and `finish`'s copies. */
import { describe, expect, test } from 'bun:test';
import { Encoder } from '../../../src/imap/wire/index.ts';

const text = (parts: Uint8Array[]): string => parts.map((p) => Buffer.from(p).toString('latin1')).join('');

describe('Encoder.takeViews', () => {
  test('views keep their bytes until recycle, also when later output grows the buffer', () => {
    const enc = new Encoder({ side: 'server' });
    enc.raw('* 1 EXISTS').crlf();
    const first = enc.takeViews();
    expect(text(first)).toBe('* 1 EXISTS\r\n');
    enc.raw('x'.repeat(10000)).crlf(); // grows past the first buffer
    const second = enc.takeViews();
    expect(text(first)).toBe('* 1 EXISTS\r\n');
    expect(text(second)).toBe('x'.repeat(10000) + '\r\n');
    enc.recycle();
    enc.raw('* 2 EXISTS').crlf();
    const third = enc.takeViews();
    expect(text(third)).toBe('* 2 EXISTS\r\n');
    // Recycled: the same memory is reused, so the second batch's bytes are overwritten.
    expect(third[0]!.buffer).toBe(second[0]!.buffer);
    expect(third[0]!.byteOffset).toBe(0);
  });

  test('without recycle, later output never overwrites earlier views', () => {
    const enc = new Encoder({ side: 'server' });
    enc.raw('A').crlf();
    const a = enc.takeViews();
    enc.raw('B').crlf();
    const b = enc.takeViews();
    expect(text(a) + text(b)).toBe('A\r\nB\r\n');
  });

  test('large literals are passed by reference between views of the buffer', () => {
    const enc = new Encoder({ side: 'server' });
    const body = new Uint8Array(64 * 1024).fill(0x61);
    enc.raw('* 1 FETCH (BODY[] ').literal(body).raw(')').crlf();
    const parts = enc.takeViews();
    expect(parts.length).toBe(3);
    expect(parts[1]).toBe(body);
    expect(text(parts)).toBe(`* 1 FETCH (BODY[] {65536}\r\n${'a'.repeat(65536)})\r\n`);
  });

  test('finish returns copies, so the buffer can be reused at once', () => {
    const enc = new Encoder({ side: 'client' });
    enc.raw('a1 NOOP').crlf();
    const [round] = enc.finish();
    enc.raw('a2 NOOP').crlf();
    enc.finish();
    expect(text(round!)).toBe('a1 NOOP\r\n');
  });
});
