/**
 * Test helpers: a real `tidegate serve` in a child process, and a tiny OpenAI-compatible
 * upstream in this process whose behaviour each test chooses.
 */

import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";

/** The repository's `tidegate` command: `$TIDEGATE_BIN`, else `.venv/bin/tidegate` in the
 * first directory above this one that has it. */
export function tidegateBin(): string {
  if (process.env.TIDEGATE_BIN) return process.env.TIDEGATE_BIN;
  let dir = resolve(__dirname);
  for (;;) {
    const candidate = join(dir, ".venv", "bin", "tidegate");
    if (existsSync(candidate)) return candidate;
    const parent = dirname(dir);
    if (parent === dir) throw new Error("no .venv/bin/tidegate above the tests; set TIDEGATE_BIN");
    dir = parent;
  }
}

/** One access-log record of the gateway. */
export interface AccessRecord {
  request_id: string;
  endpoint: string;
  status: number;
  error?: string;
  [field: string]: unknown;
}

/** A running gateway: its URL, its output, and its access records. */
export class Gateway {
  readonly lines: string[] = [];
  url = "";
  private readonly dir: string;
  private readonly child: ChildProcess;

  private constructor(dir: string, child: ChildProcess) {
    this.dir = dir;
    this.child = child;
  }

  /** Start `tidegate serve --port 0 --config <config as YAML>`; resolves once it listens (the
   * address is read from its first stderr line: `listening on http://127.0.0.1:PORT`). */
  static async start(config: object, env: Record<string, string> = {}): Promise<Gateway> {
    const dir = mkdtempSync(join(tmpdir(), "tidegate-vscode-"));
    const path = join(dir, "tidegate.yaml");
    writeFileSync(path, JSON.stringify(config, null, 2)); // JSON is YAML
    const clean = Object.fromEntries(
      Object.entries(process.env).filter(([k]) => !k.startsWith("TIDEGATE_") && !k.startsWith("ANYTHINGLLM_")),
    );
    const child = spawn(tidegateBin(), ["serve", "--port", "0", "--config", path], {
      cwd: dir,
      env: { ...clean, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    const gateway = new Gateway(dir, child);
    await new Promise<void>((ready, fail) => {
      const timer = setTimeout(() => fail(new Error(`gateway did not start:\n${gateway.output()}`)), 20_000);
      const take = (stream: NodeJS.ReadableStream): void => {
        let rest = "";
        stream.setEncoding("utf8");
        stream.on("data", (data: string) => {
          const parts = (rest + data).split("\n");
          rest = parts.pop() ?? "";
          for (const line of parts) {
            gateway.lines.push(line);
            const found = /listening on (http:\/\/\S+?:\d+)/.exec(line);
            if (found && !gateway.url) {
              gateway.url = found[1];
              clearTimeout(timer);
              ready();
            }
          }
        });
      };
      take(child.stdout!);
      take(child.stderr!);
      child.on("exit", (code) => {
        clearTimeout(timer);
        if (!gateway.url) fail(new Error(`gateway exited with ${code}:\n${gateway.output()}`));
      });
    });
    return gateway;
  }

  /** Everything it has written. */
  output(): string {
    return this.lines.join("\n");
  }

  /** The access record of one request, waiting up to `timeoutMs` for it to be written. */
  async record(requestId: string, timeoutMs = 5000): Promise<AccessRecord> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      for (const line of this.lines) {
        if (!line.startsWith('{"request_id"')) continue;
        const record = JSON.parse(line) as AccessRecord;
        if (record.request_id === requestId) return record;
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    throw new Error(`no access record for ${requestId}:\n${this.output()}`);
  }

  /** Stop the process (SIGTERM, then SIGKILL after 10 s) and remove its directory. */
  async stop(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      const exited = new Promise((r) => this.child.once("exit", r));
      this.child.kill("SIGTERM");
      const timer = setTimeout(() => this.child.kill("SIGKILL"), 10_000);
      await exited;
      clearTimeout(timer);
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** A request the fake upstream received. */
export interface UpstreamRequest {
  path: string;
  body: { model?: string; messages?: { role: string; content: unknown }[]; [field: string]: unknown };
}

/** What the fake upstream does with one request. */
export type Behaviour = (request: UpstreamRequest, response: ServerResponse) => void;

/** A small OpenAI-compatible upstream (`/v1/chat/completions`); `/<name>/v1/...` runs
 * `behaviours[name]`. It records every request and counts connections that closed. */
export class FakeUpstream {
  readonly requests: UpstreamRequest[] = [];
  closed = 0;
  private readonly server: Server;

  constructor(private readonly behaviours: Record<string, Behaviour>) {
    this.server = createServer((req, res) => this.handle(req, res));
  }

  /** Listen on an ephemeral port of 127.0.0.1. */
  async start(): Promise<this> {
    await new Promise<void>((r) => this.server.listen(0, "127.0.0.1", r));
    return this;
  }

  /** The base URL (for a model's `base_url`) of behaviour `name`. */
  base(name: string): string {
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/${name}/v1`;
  }

  /** Stop listening and drop open connections. */
  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise((r) => this.server.close(r));
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    let raw = "";
    req.setEncoding("utf8");
    req.on("data", (data: string) => (raw += data));
    req.on("end", () => {
      const name = (req.url ?? "").split("/")[1] ?? "";
      const request: UpstreamRequest = { path: req.url ?? "", body: raw ? (JSON.parse(raw) as UpstreamRequest["body"]) : {} };
      this.requests.push(request);
      res.on("close", () => (this.closed += 1));
      const behaviour = this.behaviours[name];
      if (behaviour === undefined) {
        res.writeHead(404, { "content-type": "application/json" }).end('{"error":{"message":"no such behaviour"}}');
        return;
      }
      behaviour(request, res);
    });
  }
}

/** An OpenAI chat-completion chunk carrying `content`, as one SSE event. */
export function chunkEvent(content: string, finish: string | null = null): string {
  const delta = finish === null ? { content } : {};
  const chunk = { id: "chatcmpl-fake", object: "chat.completion.chunk", created: 0, model: "fake", choices: [{ index: 0, delta, finish_reason: finish }] };
  return `data: ${JSON.stringify(chunk)}\n\n`;
}

/** Start an event stream on `res`. */
export function beginStream(res: ServerResponse): void {
  res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
}

/** Stream `pieces` as an OpenAI answer, then finish with `stop` and `[DONE]`. */
export function streamAnswer(res: ServerResponse, pieces: string[]): void {
  beginStream(res);
  for (const piece of pieces) res.write(chunkEvent(piece));
  res.write(chunkEvent("", "stop"));
  res.end("data: [DONE]\n\n");
}

/** All the text of the messages the upstream was sent. */
export function promptText(request: UpstreamRequest): string {
  return (request.body.messages ?? [])
    .map((m) => (typeof m.content === "string" ? m.content : JSON.stringify(m.content)))
    .join("\n");
}
