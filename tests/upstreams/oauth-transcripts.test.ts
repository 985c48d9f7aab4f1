// The provider transcripts in tests/fixtures/oauth/ are well-formed and say what their headers
// claim, so unit tests of the proxy can rely on them.
import { describe, expect, test } from "bun:test";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { readTranscript, TRANSCRIPTS_DIR, transcriptSection } from "../fixtures/oauth-transcripts.ts";

function decodeJson(base64: string): unknown {
  return JSON.parse(Buffer.from(base64, "base64").toString("utf8"));
}

describe("tests/fixtures/oauth transcripts", () => {
  test("every file has a header saying what it shows and where it comes from, and parses", () => {
    const files = readdirSync(TRANSCRIPTS_DIR).filter((name) => name.endsWith(".txt"));
    expect(files.sort()).toEqual(["gmail-xoauth2-failure.txt", "microsoft-refresh-rotation.txt"]);
    for (const file of files) {
      const header = readFileSync(join(TRANSCRIPTS_DIR, file), "utf8").split("\n== ")[0] as string;
      expect(header).toMatch(/^# What it shows:/m);
      expect(header).toMatch(/^# Source:/m);
      expect(readTranscript(file).size).toBeGreaterThan(0);
    }
  });

  test("Gmail IMAP: XOAUTH2, then a + JSON challenge, an empty client line, NO [AUTHENTICATIONFAILED]", () => {
    const lines = transcriptSection("gmail-xoauth2-failure.txt", "imap");
    const auth = lines.findIndex((line) => line.from === "C" && /^a2 AUTHENTICATE XOAUTH2 /.test(line.text));
    expect(auth).toBeGreaterThan(0);
    const initial = Buffer.from(lines[auth]?.text.split(" ")[3] ?? "", "base64").toString("latin1");
    expect(initial).toMatch(/^user=[^\x01]+\x01auth=Bearer [^\x01]+\x01\x01$/);
    const challenge = lines[auth + 1];
    expect(challenge?.from).toBe("S");
    expect(decodeJson(challenge?.text.replace(/^\+ /, "") ?? "")).toEqual({
      status: "401",
      schemes: "Bearer",
      scope: "https://mail.google.com/",
    });
    expect(lines[auth + 2]).toEqual({ from: "C", text: "" });
    expect(lines[auth + 3]).toEqual({ from: "S", text: "a2 NO [AUTHENTICATIONFAILED] Invalid credentials (Failure)" });
  });

  test("Gmail SMTP: 334 JSON challenge, empty client line, then a multi-line 535 5.7.8", () => {
    const lines = transcriptSection("gmail-xoauth2-failure.txt", "smtp");
    const auth = lines.findIndex((line) => line.from === "C" && line.text.startsWith("AUTH XOAUTH2 "));
    expect(decodeJson(lines[auth + 1]?.text.replace(/^334 /, "") ?? "")).toMatchObject({ status: "401" });
    expect(lines[auth + 2]).toEqual({ from: "C", text: "" });
    expect(lines[auth + 3]?.text).toStartWith("535-5.7.8 Username and Password not accepted");
    expect(lines[auth + 4]?.text).toMatch(/^535 5\.7\.8 /);
    expect(lines.find((line) => line.text.startsWith("250-AUTH"))?.text).toContain("XOAUTH2");
  });

  test("Microsoft: each refresh answers with a new refresh token; the last is invalid_grant (AADSTS)", () => {
    const transcript = readTranscript("microsoft-refresh-rotation.txt");
    const exchanges = [...transcript.values()];
    const sent = exchanges.map((lines) => {
      const body = lines.filter((line) => line.from === "C").at(-1)?.text ?? "";
      return new URLSearchParams(body).get("refresh_token");
    });
    const answers = exchanges.map((lines) => JSON.parse(lines.at(-1)?.text ?? "") as Record<string, unknown>);
    expect(answers[0]?.["refresh_token"]).not.toBe(sent[0]);
    // The next request uses the refresh token the previous answer returned.
    expect(sent[1]).toBe(answers[0]?.["refresh_token"] as string);
    expect(sent[2]).toBe(answers[1]?.["refresh_token"] as string);
    expect(new Set([sent[0], ...answers.slice(0, 2).map((answer) => answer["refresh_token"])]).size).toBe(3);
    expect(answers[2]).toMatchObject({ error: "invalid_grant", error_codes: [50173] });
    expect(exchanges[2]?.find((line) => line.from === "S")?.text).toBe("HTTP/1.1 400 Bad Request");
  });
});
