/**
 * A private certificate authority and a server certificate it signs, for CN localhost
 * with subjectAltName DNS:localhost and IP:127.0.0.1. Clients trust `ca.pem` (a CA-file
 * option) instead of turning verification off. Made once per runtime folder with openssl.
 */
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";

export interface TlsFiles {
  readonly caFile: string;
  readonly certFile: string;
  readonly keyFile: string;
}

/** Returns the files under `dir`, creating them when missing. */
export function ensureCertificates(dir: string): TlsFiles {
  const files: TlsFiles = {
    caFile: join(dir, "ca.pem"),
    certFile: join(dir, "server.pem"),
    keyFile: join(dir, "server.key"),
  };
  if (existsSync(files.caFile) && existsSync(files.certFile) && existsSync(files.keyFile)) return files;
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  const caKey = join(dir, "ca.key");
  const csr = join(dir, "server.csr");
  const extensions = join(dir, "server.ext");
  openssl([
    "req",
    "-x509",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-days",
    "3650",
    "-sha256",
    "-keyout",
    caKey,
    "-out",
    files.caFile,
    "-subj",
    "/CN=Mailgator test CA",
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign,cRLSign",
  ]);
  openssl(["req", "-newkey", "rsa:2048", "-nodes", "-keyout", files.keyFile, "-out", csr, "-subj", "/CN=localhost"]);
  writeFileSync(
    extensions,
    [
      "basicConstraints = CA:FALSE",
      "keyUsage = critical, digitalSignature, keyEncipherment",
      "extendedKeyUsage = serverAuth",
      "subjectAltName = DNS:localhost, IP:127.0.0.1",
      "",
    ].join("\n"),
  );
  openssl([
    "x509",
    "-req",
    "-in",
    csr,
    "-CA",
    files.caFile,
    "-CAkey",
    caKey,
    "-CAcreateserial",
    "-days",
    "3650",
    "-sha256",
    "-extfile",
    extensions,
    "-out",
    files.certFile,
  ]);
  return files;
}

function openssl(args: string[]): void {
  const result = Bun.spawnSync(["openssl", ...args], { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  if (result.exitCode !== 0)
    throw new Error(`upstreams: openssl ${args[0]} failed: ${result.stderr.toString().trim()}`);
}
