/**
 * Reading the PEM files a config names for TLS (docs/config.md "[imap] and [smtp]"): a listener's `tls_cert_file`
 * and `tls_key_file`, an `upstream_ca_file`. Each must be a regular file of at most MAX_TLS_FILE_BYTES, read through
 * one descriptor opened without blocking. A FIFO with no writer would otherwise stop the process where it is opened
 * (`mailgator check` for ever; at a reload, `serve` with every session it holds, since the read is synchronous), and
 * a device such as /dev/zero would be read until memory runs out.
 */

import { closeSync, constants, fstatSync, openSync, type Stats } from "node:fs";
import { fileKind, readWhole } from "../runtime/whole-file.ts";

/** The largest TLS file read (1 MiB): a certificate chain is a few KiB, a system CA bundle some hundreds. */
export const MAX_TLS_FILE_BYTES = 1024 * 1024;

/** Why a TLS file was not read; the message says it of the file, without naming it (`is not a regular file …`). */
export class TlsFileError extends Error {
  override name = "TlsFileError";
}

/**
 * The bytes of `file`, or a TlsFileError: not a regular file, larger than MAX_TLS_FILE_BYTES, or read other than its
 * size (being written, or made up by the kernel as it is read). `check` sees the open descriptor's stat before
 * anything is read (the key file's mode, src/net/listener.ts), so what is read is what was checked.
 */
export function readTlsFile(file: string, check?: (stat: Stats) => void): Buffer {
  let fd: number;
  try {
    // O_NONBLOCK: opening a FIFO with no writer would otherwise wait for one.
    fd = openSync(file, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY);
  } catch (e) {
    throw new TlsFileError(`cannot be read (${(e as Error).message})`);
  }
  try {
    const stat = fstatSync(fd);
    if (!stat.isFile()) throw new TlsFileError(`is not a regular file (${fileKind(stat.mode)})`);
    check?.(stat);
    if (stat.size > MAX_TLS_FILE_BYTES) throw tooLarge();
    const whole = readWhole(fd, stat.size);
    if (!Buffer.isBuffer(whole))
      throw new TlsFileError(
        `read ${whole.read} bytes where its size is ${stat.size}: a file being written, or one the kernel makes up ` +
          "as it is read, is not read",
      );
    return whole;
  } catch (e) {
    if (e instanceof TlsFileError || !(e instanceof Error) || !("code" in e)) throw e;
    throw new TlsFileError(`cannot be read (${e.message})`);
  } finally {
    closeSync(fd);
  }
}

function tooLarge(): TlsFileError {
  return new TlsFileError(`is larger than ${MAX_TLS_FILE_BYTES} bytes (MAX_TLS_FILE_BYTES); not read`);
}
