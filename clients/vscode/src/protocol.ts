/**
 * The client of tidegate's `/stream-ask` protocol (docs/protocol.md in the gateway's
 * repository): request building, an SSE decoder that follows the WHATWG rules, typed events,
 * errors as values a person can read, and stopping through an AbortSignal.
 *
 * This module does not import `vscode`, so it runs (and is tested) under plain Node against a
 * real gateway. It needs only `fetch`, `TextDecoder` and `AbortController` (Node 18+ and every
 * VS Code extension host since 1.82).
 */

/** What the gateway is asked to do; the server builds its prompt from it. */
export type Task = "ask" | "generate" | "fix" | "explain" | "review";

/** An earlier turn of the conversation. */
export interface HistoryMessage {
  role: "user" | "assistant" | "system";
  content: string;
}

/** Where the question comes from in the editor. */
export interface CodeContext {
  file?: string;
  language?: string;
  selection?: string;
  code?: string;
}

/** The body of `POST /stream-ask` and `POST /ask`. Only `question` is required. */
export interface AskRequest {
  question: string;
  model?: string;
  session_id?: string;
  history?: HistoryMessage[];
  system?: string;
  context?: CodeContext;
  /** Images as `data:` URLs. */
  images?: string[];
  max_tokens?: number;
  temperature?: number;
  top_p?: number;
  task?: Task;
  /** The code the task is about (the selection or the file). */
  code?: string;
  /** A traceback, for the `fix` task. */
  error?: string;
}

/** Token counts, normalized by the gateway across providers. */
export interface Usage {
  input_tokens: number;
  output_tokens: number;
  total_tokens: number;
  cache_read_tokens?: number;
  cache_write_tokens?: number;
  reasoning_tokens?: number;
}

/** A citation (AnythingLLM workspaces send them). */
export interface Source {
  id?: string;
  title?: string;
  text?: string;
  url?: string;
  score?: number;
  [field: string]: unknown;
}

/** One event of the answer stream, typed. `id` is the SSE `id:` (a sequence number). */
export type StreamEvent =
  | { type: "start"; id: string; streamId: string; resumeToken: string }
  | { type: "chunk"; id: string; content: string }
  | { type: "reasoning"; id: string; content: string }
  | { type: "sources"; id: string; sources: Source[] }
  | { type: "error"; id: string; message: string; code: string }
  | { type: "end"; id: string; finishReason: string; usage: Usage | null; sources: Source[] };

/** One dispatched SSE message: its type (`message` when unnamed), data and last event id. */
export interface SseMessage {
  event: string;
  data: string;
  id: string;
}

/** A model the gateway serves (`GET /v1/models`). */
export interface ModelInfo {
  id: string;
  owned_by?: string;
}

/** The answer of `POST /ask`. */
export interface AskResponse {
  answer: string;
  sources: Source[];
  usage: Usage | null;
  session_id: string | null;
  finish_reason: string;
}

/**
 * Any failure of a call: an HTTP error before the stream (`status` set, `code` the gateway's),
 * the gateway unreachable (`status` 0, code `network`), or a reply that breaks the protocol
 * (code `protocol_error`). `message` is the gateway's own text; `describeError` words it for a
 * person.
 */
export class TidegateError extends Error {
  /** The HTTP status; 0 when no response arrived. */
  readonly status: number;
  readonly code: string;
  /** The gateway's `X-Request-ID`, when a response arrived. */
  readonly requestId: string | undefined;
  /** Seconds from `Retry-After`, on a 429 or 503. */
  readonly retryAfter: number | undefined;

  constructor(
    message: string,
    code: string,
    status = 0,
    requestId?: string,
    retryAfter?: number,
  ) {
    super(message);
    this.name = "TidegateError";
    this.code = code;
    this.status = status;
    this.requestId = requestId;
    this.retryAfter = retryAfter;
  }
}

// -- SSE ---------------------------------------------------------------------------------------

/**
 * An incremental SSE decoder (WHATWG HTML, "event stream interpretation"): bytes are decoded as
 * UTF-8 across reads (a leading BOM dropped); lines end in CRLF, LF or CR, including a CR and
 * an LF split between two reads; `data:` lines are joined with LF; a blank line dispatches the
 * event if it has data; comment lines (`:`) and unknown fields are ignored; one space after the
 * colon is dropped; an `id` containing NUL is ignored; an unterminated last event is discarded.
 */
export class SseDecoder {
  private readonly utf8 = new TextDecoder("utf-8");
  private buffer = "";
  private pendingCR = false;
  private data: string[] = [];
  private eventType = "";
  private lastId = "";

  /** Feed raw bytes; returns the events they completed. */
  decodeBytes(bytes: Uint8Array): SseMessage[] {
    return this.decode(this.utf8.decode(bytes, { stream: true }));
  }

  /** Feed decoded text; returns the events it completed. */
  decode(text: string): SseMessage[] {
    const out: SseMessage[] = [];
    if (this.pendingCR && text.startsWith("\n")) text = text.slice(1);
    this.pendingCR = false;
    const buffer = this.buffer + text;
    let start = 0;
    for (let i = 0; i < buffer.length; i++) {
      const ch = buffer.charCodeAt(i);
      if (ch !== 10 && ch !== 13) continue;
      this.line(buffer.slice(start, i), out);
      if (ch === 13) {
        if (i + 1 === buffer.length) this.pendingCR = true;
        else if (buffer.charCodeAt(i + 1) === 10) i++;
      }
      start = i + 1;
    }
    this.buffer = buffer.slice(start);
    return out;
  }

  /** The end of the stream: flushes the UTF-8 decoder and returns what that completed. An
   * event still missing its blank line is discarded, as the standard says. */
  finish(): SseMessage[] {
    const out = this.decode(this.utf8.decode());
    this.buffer = "";
    this.data = [];
    this.eventType = "";
    return out;
  }

  private line(line: string, out: SseMessage[]): void {
    if (line === "") {
      if (this.data.length > 0) {
        out.push({ event: this.eventType || "message", data: this.data.join("\n"), id: this.lastId });
      }
      this.data = [];
      this.eventType = "";
      return;
    }
    if (line.startsWith(":")) return;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") this.data.push(value);
    else if (field === "event") this.eventType = value;
    else if (field === "id" && !value.includes("\0")) this.lastId = value;
  }
}

// -- events ------------------------------------------------------------------------------------

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function text(value: unknown): string {
  return typeof value === "string" ? value : "";
}

function sources(value: unknown): Source[] {
  return Array.isArray(value) ? value.filter(isObject) : [];
}

function usage(value: unknown): Usage | null {
  if (!isObject(value)) return null;
  const count = (name: string): number => (typeof value[name] === "number" ? value[name] : 0);
  return {
    input_tokens: count("input_tokens"),
    output_tokens: count("output_tokens"),
    total_tokens: count("total_tokens"),
    cache_read_tokens: count("cache_read_tokens"),
    cache_write_tokens: count("cache_write_tokens"),
    reasoning_tokens: count("reasoning_tokens"),
  };
}

/**
 * The typed event of one SSE message, or `undefined` for a message this client does not know
 * (a newer gateway may add some). Data that is not a JSON object is a `TidegateError` with code
 * `protocol_error`.
 */
export function toStreamEvent(message: SseMessage): StreamEvent | undefined {
  let payload: unknown;
  try {
    payload = JSON.parse(message.data);
  } catch {
    throw new TidegateError(`the gateway sent an event that is not JSON: ${message.data.slice(0, 80)}`, "protocol_error");
  }
  if (!isObject(payload)) {
    throw new TidegateError("the gateway sent an event that is not a JSON object", "protocol_error");
  }
  const id = message.id;
  switch (message.event) {
    case "message":
      if (payload.type === "chunk") return { type: "chunk", id, content: text(payload.content) };
      if (payload.type === "reasoning") return { type: "reasoning", id, content: text(payload.content) };
      return undefined;
    case "start":
      return { type: "start", id, streamId: text(payload.stream_id), resumeToken: text(payload.resume_token) };
    case "sources":
      return { type: "sources", id, sources: sources(payload.sources) };
    case "error":
      return { type: "error", id, message: text(payload.message), code: text(payload.code) || "error" };
    case "final_end":
      return {
        type: "end",
        id,
        finishReason: text(payload.finish_reason) || "stop",
        usage: usage(payload.usage),
        sources: sources(payload.sources),
      };
    default:
      return undefined;
  }
}

// -- errors for people -------------------------------------------------------------------------

const EXPLANATIONS: Record<string, string> = {
  unauthorized: "The gateway needs a client key, or the one given is not known.",
  invalid_request: "The gateway did not accept the request.",
  model_not_found: "That model is not configured on the gateway.",
  not_found: "The gateway does not serve this endpoint (it may be older than this extension).",
  payload_too_large: "The question or code is too large for the gateway.",
  upstream_invalid_request: "The model's service refused the request.",
  upstream_rate_limited: "The model's service is rate limiting requests; try again shortly.",
  upstream_auth_failed: "The model's service refused the gateway's credentials (a gateway configuration problem).",
  upstream_unreachable: "The gateway could not reach the model's service.",
  upstream_timeout: "The model's service took too long to answer.",
  upstream_disconnected: "The model's service dropped the connection before the answer was complete.",
  upstream_protocol_error: "The model's service sent an answer the gateway could not read.",
  upstream_error: "The model's service failed while answering.",
  network: "Could not reach the gateway.",
  protocol_error: "The gateway's reply could not be read.",
  stream_truncated: "The connection to the gateway closed before the answer was complete.",
};

/** A sentence for a person, then the gateway's own message and code:
 * `"That model is not configured on the gateway. unknown model 'x' (HTTP 404, model_not_found)"`. */
export function describeError(error: { code: string; message: string; status?: number }): string {
  const status = error.status ?? 0;
  const lead = EXPLANATIONS[error.code] ?? (status >= 500 ? "The gateway failed to answer." : "The request failed.");
  const where = [status ? `HTTP ${status}` : "", error.code].filter(Boolean).join(", ");
  const detail = error.message && error.message !== lead ? ` ${error.message}` : "";
  return `${lead}${detail}${where ? ` (${where})` : ""}`;
}

// -- the client --------------------------------------------------------------------------------

/** How to reach a gateway. */
export interface ClientOptions {
  /** The gateway's root URL, e.g. `http://127.0.0.1:8080`. */
  baseUrl: string;
  /** A client key (`auth.api_keys`), sent as `Authorization: Bearer`. */
  apiKey?: string;
  /** A `fetch` to use instead of the global one (tests, proxies). */
  fetch?: typeof fetch;
}

/** Options of one call. */
export interface CallOptions {
  /** Aborting it stops the call; the gateway then cancels its upstream call. */
  signal?: AbortSignal;
  /** Told the response's status and `X-Request-ID` once headers arrive. */
  onResponse?: (info: { status: number; requestId: string | undefined }) => void;
}

/** A built HTTP request: what `fetch` is called with. */
export interface BuiltRequest {
  url: string;
  init: RequestInit & { headers: Record<string, string>; method: string };
}

/** What a stream came to (see `runStream`). */
export interface StreamResult {
  text: string;
  reasoning: string;
  sources: Source[];
  /** The `final_end` reason; `stopped` when the caller stopped it, `error` after an error. */
  finishReason: string;
  usage: Usage | null;
  /** The in-band error, if the answer failed after it began. */
  error: { message: string; code: string } | undefined;
  stopped: boolean;
  /** Milliseconds from the request to its first chunk or reasoning, if one came. */
  firstTokenMs: number | undefined;
  requestId: string | undefined;
  /** The stream's id (from its `start` event): what `POST /v1/streams/{id}/cancel` takes. */
  streamId: string | undefined;
}

/** A client of one gateway. Stateless: each call is independent. */
export class TidegateClient {
  private readonly baseUrl: string;
  private readonly apiKey: string | undefined;
  private readonly fetchImpl: typeof fetch;

  constructor(options: ClientOptions) {
    this.baseUrl = options.baseUrl.replace(/\/+$/, "");
    this.apiKey = options.apiKey || undefined;
    this.fetchImpl = options.fetch ?? fetch;
  }

  /** The HTTP request for `path` with a JSON `body` (or a GET without one). Fields that are
   * `undefined`, and empty optional strings and arrays, are left out. */
  buildRequest(path: string, body?: AskRequest, accept = "application/json"): BuiltRequest {
    const headers: Record<string, string> = { Accept: accept };
    if (this.apiKey) headers.Authorization = `Bearer ${this.apiKey}`;
    if (body === undefined) return { url: this.baseUrl + path, init: { method: "GET", headers } };
    headers["Content-Type"] = "application/json";
    return { url: this.baseUrl + path, init: { method: "POST", headers, body: JSON.stringify(compact(body)) } };
  }

  /**
   * Stream the answer to `request` from `POST /stream-ask` as typed events, ending with exactly
   * one `end` event. Throws `TidegateError` if the gateway refuses before the stream (HTTP
   * status and its `{error, code}`) or cannot be reached. Once the stream began, failures are
   * events: the gateway's `error` event, or, if the connection closes without `final_end`, an
   * `error` with code `stream_truncated` followed by an `end` with reason `error`. Aborting
   * `options.signal` ends the iteration without an error and without an `end` event.
   */
  async *stream(request: AskRequest, options: CallOptions = {}): AsyncGenerator<StreamEvent, void, undefined> {
    const { signal } = options;
    let response: Response;
    try {
      response = await this.send("/stream-ask", request, "text/event-stream", options);
    } catch (err) {
      if (signal?.aborted) return;
      throw err;
    }
    const body = response.body;
    if (body === null) throw new TidegateError("the gateway's response has no body", "protocol_error", response.status);
    const reader = body.getReader();
    const decoder = new SseDecoder();
    let lastId = "";
    try {
      for (;;) {
        let read: ReadableStreamReadResult<Uint8Array>;
        try {
          read = await reader.read();
        } catch {
          if (signal?.aborted) return;
          break; // the connection broke: reported below as a truncated stream
        }
        const messages = read.done ? decoder.finish() : decoder.decodeBytes(read.value);
        for (const message of messages) {
          const event = toStreamEvent(message);
          if (event === undefined) continue;
          lastId = event.id;
          yield event;
          if (event.type === "end") return;
        }
        if (read.done) break;
      }
      if (signal?.aborted) return;
      yield { type: "error", id: lastId, message: "the stream ended without its final_end event", code: "stream_truncated" };
      yield { type: "end", id: lastId, finishReason: "error", usage: null, sources: [] };
    } finally {
      // Stopping early (a `break` in the caller's loop, an end event, an abort) closes the
      // connection; the gateway sees the client go and cancels its upstream call.
      reader.cancel().catch(() => undefined);
    }
  }

  /** The whole answer to `request` from `POST /ask`. */
  async ask(request: AskRequest, options: CallOptions = {}): Promise<AskResponse> {
    const response = await this.send("/ask", request, "application/json", options);
    const body: unknown = await response.json();
    if (!isObject(body) || typeof body.answer !== "string") {
      throw new TidegateError("the gateway's /ask answer has no 'answer'", "protocol_error", response.status);
    }
    return {
      answer: body.answer,
      sources: sources(body.sources),
      usage: usage(body.usage),
      session_id: typeof body.session_id === "string" ? body.session_id : null,
      finish_reason: text(body.finish_reason) || "stop",
    };
  }

  /** The models the gateway serves (`GET /v1/models`). */
  async models(options: CallOptions = {}): Promise<ModelInfo[]> {
    const response = await this.send("/v1/models", undefined, "application/json", options);
    const body: unknown = await response.json();
    const data = isObject(body) && Array.isArray(body.data) ? body.data : [];
    return data
      .filter(isObject)
      .filter((m) => typeof m.id === "string")
      .map((m) => ({ id: String(m.id), owned_by: typeof m.owned_by === "string" ? m.owned_by : undefined }));
  }

  private async send(path: string, body: AskRequest | undefined, accept: string, options: CallOptions): Promise<Response> {
    const { url, init } = this.buildRequest(path, body, accept);
    let response: Response;
    try {
      response = await this.fetchImpl(url, { ...init, signal: options.signal });
    } catch (err) {
      if (options.signal?.aborted) throw err;
      const reason = err instanceof Error ? (err.cause instanceof Error ? err.cause.message : err.message) : String(err);
      throw new TidegateError(`${this.baseUrl}: ${reason}`, "network");
    }
    const requestId = response.headers.get("x-request-id") ?? undefined;
    options.onResponse?.({ status: response.status, requestId });
    if (!response.ok) throw await httpError(response, requestId);
    return response;
  }
}

/** The `TidegateError` of a response that is not 2xx: `{error, code}` (/stream-ask, /ask) or
 * `{error: {message, code}}` (/v1/...), else its status text. */
async function httpError(response: Response, requestId: string | undefined): Promise<TidegateError> {
  let message = response.statusText || `HTTP ${response.status}`;
  let code = `http_${response.status}`;
  try {
    const body: unknown = JSON.parse(await response.text());
    if (isObject(body)) {
      const err = body.error;
      if (typeof err === "string") {
        message = err;
        code = text(body.code) || code;
      } else if (isObject(err)) {
        message = text(err.message) || message;
        code = text(err.code) || text(err.type) || code;
      }
    }
  } catch {
    // not JSON: keep the status text
  }
  const retry = Number(response.headers.get("retry-after"));
  return new TidegateError(message, code, response.status, requestId, Number.isFinite(retry) && retry > 0 ? retry : undefined);
}

function compact(request: AskRequest): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(request)) {
    if (value === undefined || value === null) continue;
    if (key !== "question" && (value === "" || (Array.isArray(value) && value.length === 0))) continue;
    out[key] = value;
  }
  return out;
}

/**
 * Stream `request` to the end, telling `onEvent` each event, and sum it up. Errors before the
 * stream are thrown (`TidegateError`); an abort through `signal` gives `stopped: true`.
 */
export async function runStream(
  client: TidegateClient,
  request: AskRequest,
  options: CallOptions & { onEvent?: (event: StreamEvent) => void } = {},
): Promise<StreamResult> {
  const started = Date.now();
  const result: StreamResult = {
    text: "",
    reasoning: "",
    sources: [],
    finishReason: "stopped",
    usage: null,
    error: undefined,
    stopped: false,
    firstTokenMs: undefined,
    requestId: undefined,
    streamId: undefined,
  };
  const onResponse = options.onResponse;
  const events = client.stream(request, {
    signal: options.signal,
    onResponse: (info) => {
      result.requestId = info.requestId;
      onResponse?.(info);
    },
  });
  let ended = false;
  for await (const event of events) {
    if ((event.type === "chunk" || event.type === "reasoning") && result.firstTokenMs === undefined) {
      result.firstTokenMs = Date.now() - started;
    }
    if (event.type === "start") result.streamId = event.streamId;
    else if (event.type === "chunk") result.text += event.content;
    else if (event.type === "reasoning") result.reasoning += event.content;
    else if (event.type === "sources") result.sources = event.sources;
    else if (event.type === "error") result.error = { message: event.message, code: event.code };
    else if (event.type === "end") {
      ended = true;
      result.finishReason = event.finishReason;
      result.usage = event.usage;
      if (event.sources.length > 0) result.sources = event.sources;
    }
    options.onEvent?.(event);
  }
  result.stopped = !ended;
  return result;
}
