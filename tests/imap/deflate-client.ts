/**
 * A raw IMAP client for COMPRESS=DEFLATE (RFC 4978): plain until `compress()`, then it deflates what it sends and
 * inflates what it reads; used where the exact bytes and the close matter (tests/imap/compress.test.ts,
 * tests/imap/literal-plus.test.ts).
 */

import { connect, type Socket } from "node:net";
import { constants, createDeflateRaw, createInflateRaw, type DeflateRaw } from "node:zlib";

/** A client that speaks plain IMAP until `compress()`, then deflates what it sends and inflates what it reads. */
export class DeflateClient {
  readonly socket: Socket;
  #text = "";
  #closed = false;
  #deflate: DeflateRaw | null = null;
  #waiters: (() => void)[] = [];

  private constructor(socket: Socket) {
    this.socket = socket;
    const inflate = createInflateRaw();
    let compressed = false;
    inflate.on("data", (c: Buffer) => this.#add(c.toString("latin1")));
    inflate.on("error", () => this.#add("\n<invalid deflate from the proxy>\n"));
    socket.on("data", (c: Buffer) => {
      if (compressed) return void inflate.write(c);
      // The tagged OK of COMPRESS is the last plain line; the rest of this read is compressed.
      const text = c.toString("latin1");
      const m = /(^|\r\n)\S+ OK DEFLATE active\r\n/.exec(text);
      if (m === null || this.#deflate === null) return this.#add(text);
      const end = m.index + m[0].length;
      this.#add(text.slice(0, end));
      compressed = true;
      if (end < c.length) inflate.write(c.subarray(end));
    });
    socket.on("close", () => {
      // What the inflater still holds was sent before the close.
      inflate.flush(() => {
        this.#closed = true;
        this.#wakeAll();
      });
    });
    socket.on("error", () => {});
  }

  static async open(port: number): Promise<DeflateClient> {
    const socket = await new Promise<Socket>((resolve, reject) => {
      const s = connect({ host: "127.0.0.1", port }, () => resolve(s));
      s.once("error", reject);
    });
    const c = new DeflateClient(socket);
    await c.until((t) => t.includes("\r\n"));
    c.take();
    return c;
  }

  get closed(): boolean {
    return this.#closed;
  }

  #add(t: string): void {
    this.#text += t;
    this.#wakeAll();
  }

  #wakeAll(): void {
    for (const w of this.#waiters.splice(0)) w();
  }

  async until(done: (t: string) => boolean, ms = 20_000): Promise<string> {
    const deadline = Date.now() + ms;
    while (!done(this.#text) && !this.#closed) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`deflate client: timeout; unread ${JSON.stringify(this.#text.slice(-300))}`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, left);
        this.#waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
    return this.#text;
  }

  take(): string {
    const t = this.#text;
    this.#text = "";
    return t;
  }

  /** Sends bytes, deflated (with a sync flush) once compression is on. */
  send(data: string | Buffer): void {
    const b = typeof data === "string" ? Buffer.from(data, "latin1") : data;
    if (this.#deflate === null) this.socket.write(b);
    else {
      this.#deflate.write(b);
      this.#deflate.flush(constants.Z_SYNC_FLUSH);
    }
  }

  /** Sends bytes deflated (with a sync flush) in one socket write, so the proxy reads them in large chunks. */
  async sendWhole(data: Buffer): Promise<void> {
    const z = this.#deflate;
    if (z === null) throw new Error("deflate client: not compressed");
    const chunks: Buffer[] = [];
    z.removeAllListeners("data");
    z.on("data", (c: Buffer) => chunks.push(c));
    z.write(data);
    await new Promise<void>((r) => z.flush(constants.Z_SYNC_FLUSH, () => r()));
    z.removeAllListeners("data");
    z.on("data", (c: Buffer) => this.socket.write(c));
    this.socket.write(Buffer.concat(chunks));
  }

  /** The deflater itself, for a caller that writes through it with back-pressure (then `flush`). */
  get deflateStream(): DeflateRaw {
    if (this.#deflate === null) throw new Error("deflate client: not compressed");
    return this.#deflate;
  }

  /** Sends what the deflater holds (a sync flush) and resolves once it is written out. */
  async flush(): Promise<void> {
    const z = this.deflateStream;
    await new Promise<void>((r) => z.flush(constants.Z_SYNC_FLUSH, () => r()));
  }

  /** Writes compressed bytes as they are (a hand-made bomb or garbage). */
  sendRaw(b: Buffer): void {
    this.socket.write(b);
  }

  async command(tag: string, line: string): Promise<string> {
    this.send(`${tag} ${line}\r\n`);
    return this.tagged(tag);
  }

  async tagged(tag: string): Promise<string> {
    const re = new RegExp(`(^|\\r\\n)${tag} (OK|NO|BAD)[^\\r\\n]*\\r\\n`);
    await this.until((t) => re.test(t));
    return this.take();
  }

  /** Sends COMPRESS DEFLATE and, with `pipelined`, a compressed command right behind it in the same write. */
  async compress(tag: string, pipelined: string | null = null): Promise<string> {
    const deflate = createDeflateRaw();
    deflate.on("data", (c: Buffer) => this.socket.write(c));
    this.#deflate = deflate;
    let bytes = Buffer.from(`${tag} COMPRESS DEFLATE\r\n`);
    if (pipelined !== null) {
      const z = createDeflateRaw();
      const chunks: Buffer[] = [];
      z.on("data", (c: Buffer) => chunks.push(c));
      z.write(Buffer.from(pipelined));
      await new Promise<void>((r) => z.flush(constants.Z_SYNC_FLUSH, () => r()));
      // The pipelined command is the start of the client's stream: go on from that stream's state.
      this.#deflate = z;
      z.removeAllListeners("data");
      z.on("data", (c: Buffer) => this.socket.write(c));
      bytes = Buffer.concat([bytes, ...chunks]);
    }
    this.socket.write(bytes);
    return this.tagged(tag);
  }

  close(): void {
    this.socket.destroy();
  }
}
