// tidegate playground: asks /stream-ask and renders the answer as it streams.
//
// Vanilla and build-free on purpose: the gateway serves this file as is. Everything the
// answer contains is put into the page as text nodes (textContent, createElement), never as
// HTML, so a model's output cannot inject markup or script; the CSP forbids inline script too.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const el = (tag, className, text) => {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  };

  // -- SSE, by the WHATWG rules: lines end in CRLF, LF or CR; data lines joined with LF; an
  // event is dispatched on a blank line; comments (":") and unknown fields are ignored. --------

  function sseParser(onEvent) {
    let buffer = "";
    let pendingCR = false; // a CR ended the last chunk: an LF starting the next one belongs to it
    let data = [];
    let type = "";
    let lastId = "";
    const line = (text) => {
      if (text === "") {
        if (data.length) onEvent({ type: type || "message", data: data.join("\n"), id: lastId });
        data = [];
        type = "";
        return;
      }
      if (text[0] === ":") return;
      const colon = text.indexOf(":");
      const field = colon < 0 ? text : text.slice(0, colon);
      let value = colon < 0 ? "" : text.slice(colon + 1);
      if (value[0] === " ") value = value.slice(1);
      if (field === "data") data.push(value);
      else if (field === "event") type = value;
      else if (field === "id" && !value.includes("\0")) lastId = value;
    };
    return (chunk) => {
      if (pendingCR && chunk[0] === "\n") chunk = chunk.slice(1);
      pendingCR = false;
      buffer += chunk;
      let start = 0;
      for (let i = 0; i < buffer.length; i++) {
        const ch = buffer[i];
        if (ch !== "\n" && ch !== "\r") continue;
        line(buffer.slice(start, i));
        if (ch === "\r") {
          if (i + 1 === buffer.length) pendingCR = true;
          else if (buffer[i + 1] === "\n") i++;
        }
        start = i + 1;
      }
      buffer = buffer.slice(start);
    };
  }

  // -- a small markdown renderer that builds DOM nodes ----------------------------------------

  const KEYWORDS = {
    python: "False None True and as assert async await break class continue def del elif else except finally for from global if import in is lambda nonlocal not or pass raise return try while with yield match case self",
    js: "async await break case catch class const continue debugger default delete do else export extends false finally for function if import in instanceof let new null return static super switch this throw true try typeof undefined var void while yield interface type enum implements",
    sh: "if then else elif fi for while do done case esac function in export local return echo cd",
  };
  const ALIASES = { py: "python", python3: "python", javascript: "js", ts: "js", typescript: "js", json: "js", bash: "sh", shell: "sh", zsh: "sh", console: "sh" };
  const TOKEN = /(#[^\n]*|\/\/[^\n]*)|("""[\s\S]*?(?:"""|$)|'''[\s\S]*?(?:'''|$)|"(?:\\.|[^"\\\n])*"?|'(?:\\.|[^'\\\n])*'?|`(?:\\.|[^`\\])*`?)|(\b\d[\d_]*(?:\.\d+)?(?:e[+-]?\d+)?j?\b|\b0x[\da-f]+\b)|(@[A-Za-z_][\w.]*)|([A-Za-z_$][\w$]*)(?=\s*\()|([A-Za-z_$][\w$]*)/gi;

  function highlight(code, language) {
    const lang = ALIASES[language] || language;
    const words = new Set((KEYWORDS[lang] || "").split(" "));
    const out = document.createDocumentFragment();
    if (!KEYWORDS[lang]) {
      out.append(code);
      return out;
    }
    let last = 0;
    for (const m of code.matchAll(TOKEN)) {
      const [text, comment, string, number, decorator, call, word] = m;
      let cls = "";
      if (comment !== undefined) cls = lang === "python" && comment[0] === "/" ? "" : lang === "js" && comment[0] === "#" ? "" : "tok-com";
      else if (string !== undefined) cls = "tok-str";
      else if (number !== undefined) cls = "tok-num";
      else if (decorator !== undefined) cls = lang === "python" ? "tok-dec" : "";
      else if (call !== undefined) cls = words.has(call) ? "tok-kw" : "tok-fn";
      else if (word !== undefined) cls = words.has(word) ? "tok-kw" : "";
      if (!cls) continue;
      if (m.index > last) out.append(code.slice(last, m.index));
      out.append(el("span", cls, text));
      last = m.index + text.length;
    }
    if (last < code.length) out.append(code.slice(last));
    return out;
  }

  const INLINE = /(`+)([\s\S]*?[^`])\1(?!`)|\*\*([^*]+)\*\*|__([^_]+)__|\*([^*\s][^*]*)\*|(?<![\w])_([^_\s][^_]*)_(?![\w])|\[([^\]]+)\]\(([^)\s]+)\)|(https?:\/\/[^\s<>()]+[^\s<>().,;:!?'"])/g;

  function inline(text, parent) {
    let last = 0;
    for (const m of text.matchAll(INLINE)) {
      if (m.index > last) parent.append(text.slice(last, m.index));
      const [whole, , code, strong1, strong2, em1, em2, label, href, bare] = m;
      if (code !== undefined) parent.append(el("code", "", code.trim() || code));
      else if (strong1 !== undefined || strong2 !== undefined) inline(strong1 ?? strong2, parent.appendChild(el("strong")));
      else if (em1 !== undefined || em2 !== undefined) inline(em1 ?? em2, parent.appendChild(el("em")));
      else if (label !== undefined) parent.append(link(label, href) || whole);
      else if (bare !== undefined) parent.append(link(bare, bare));
      last = m.index + whole.length;
    }
    if (last < text.length) parent.append(text.slice(last));
    return parent;
  }

  function link(label, href) {
    if (!/^(https?:|mailto:)/i.test(href)) return null; // no javascript:, data: or relative links
    const a = el("a", "", label);
    a.href = href;
    a.rel = "noopener noreferrer";
    a.target = "_blank";
    return a;
  }

  function codeBlock(code, language) {
    const pre = el("pre");
    const node = el("code", language ? `language-${language}` : "");
    node.append(highlight(code, language.toLowerCase()));
    const copy = el("button", "copy", "Copy");
    copy.type = "button";
    copy.addEventListener("click", () => {
      navigator.clipboard?.writeText(code).then(() => { copy.textContent = "Copied"; }, () => { copy.textContent = "Copy failed"; });
    });
    pre.append(node, copy);
    return pre;
  }

  /** Render markdown `text` into `root` (its old content replaced). An unclosed code fence,
   * as while an answer streams, renders as a code block so far. */
  function renderMarkdown(text, root) {
    const lines = text.replace(/\r\n?/g, "\n").split("\n");
    const blocks = document.createDocumentFragment();
    let para = [];
    let list = null;
    const endPara = () => {
      if (para.length) blocks.append(inline(para.join("\n"), el("p")));
      para = [];
    };
    const endList = () => { list = null; };
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i];
      const fence = /^\s{0,3}(`{3,}|~{3,})\s*([\w+#.-]*)/.exec(line);
      if (fence) {
        endPara(); endList();
        const body = [];
        for (i++; i < lines.length && !lines[i].trimStart().startsWith(fence[1]); i++) body.push(lines[i]);
        blocks.append(codeBlock(body.join("\n"), fence[2] || ""));
        continue;
      }
      const heading = /^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$/.exec(line);
      const item = /^\s*(?:[-*+]|(\d+)[.)])\s+(.*)$/.exec(line);
      if (!line.trim()) { endPara(); endList(); }
      else if (heading) { endPara(); endList(); blocks.append(inline(heading[2], el(`h${heading[1].length + 2 > 6 ? 6 : heading[1].length + 2}`))); }
      else if (/^\s{0,3}([-*_])(\s*\1){2,}\s*$/.test(line)) { endPara(); endList(); blocks.append(el("hr")); }
      else if (/^\s{0,3}>/.test(line)) { endPara(); endList(); blocks.append(inline(line.replace(/^\s*>\s?/, ""), el("blockquote"))); }
      else if (item) {
        endPara();
        const kind = item[1] === undefined ? "ul" : "ol";
        if (!list || list.tagName.toLowerCase() !== kind) {
          list = blocks.appendChild(el(kind));
          if (kind === "ol" && item[1] !== "1") list.start = Number(item[1]);
        }
        list.append(inline(item[2], el("li")));
      } else if (list && /^\s{2,}\S/.test(line)) {
        list.lastElementChild.append(" ", ...inline(line.trim(), el("span")).childNodes);
      } else { endList(); para.push(line.trim()); }
    }
    endPara();
    root.replaceChildren(blocks);
  }

  // -- errors as a person reads them ----------------------------------------------------------

  const EXPLAIN = {
    unauthorized: "This gateway needs a client key.",
    invalid_request: "The gateway did not accept the request.",
    model_not_found: "That model is not configured on this gateway.",
    payload_too_large: "The question or code is too large for this gateway.",
    upstream_invalid_request: "The model's service refused the request.",
    upstream_rate_limited: "The model's service is rate limiting requests; try again shortly.",
    upstream_auth_failed: "The model's service refused the gateway's credentials (a gateway configuration problem).",
    upstream_unreachable: "The gateway could not reach the model's service.",
    upstream_timeout: "The model's service took too long to answer.",
    upstream_disconnected: "The model's service dropped the connection before the answer was complete.",
    upstream_protocol_error: "The model's service sent an answer the gateway could not read.",
    upstream_error: "The model's service failed while answering.",
    network: "Could not reach the gateway.",
    stream_cut: "The connection to the gateway closed before the answer was complete.",
  };

  /** A person's summary of a failure: what happened, then the gateway's own words. */
  function describe(code, message, status) {
    const title = EXPLAIN[code] || (status >= 500 ? "The gateway failed to answer." : "The request failed.");
    const detail = [message, code && `(${status ? `HTTP ${status}, ` : ""}${code})`].filter(Boolean).join(" ");
    return { title, detail };
  }

  async function readError(response) {
    let message = "";
    let code = "";
    try {
      const body = await response.json();
      const err = body.error;
      if (typeof err === "string") { message = err; code = body.code || ""; }
      else if (err && typeof err === "object") { message = err.message || ""; code = err.code || err.type || ""; }
    } catch {
      message = response.statusText;
    }
    return { status: response.status, code, message };
  }

  // -- the page ---------------------------------------------------------------------------------

  const ui = {
    form: $("ask"), model: $("model"), task: $("task"), question: $("question"), code: $("code"),
    error: $("error"), send: $("send"), stop: $("stop"), clear: $("clear"), output: $("output"),
    answer: $("answer"), reasoning: $("reasoning"), reasoningBox: $("reasoning-box"),
    sources: $("sources"), stats: $("stats"), problem: $("problem"), keyForm: $("key-form"),
    key: $("key"), modelsNote: $("models-note"),
  };
  const DEFAULT_QUESTION = {
    ask: "", generate: "", fix: "Fix this error.", explain: "Explain this code.", review: "Review this code.",
  };
  const state = {
    key: "", // the client key: in memory only, never stored
    controller: null,
    history: [],
    sessionId: crypto.randomUUID ? crypto.randomUUID() : String(Math.random()).slice(2),
    keyWaiter: null,
    keyPrompt: null,
  };

  function headers(extra) {
    return state.key ? { ...extra, Authorization: `Bearer ${state.key}` } : { ...extra };
  }

  /** Show the key form and resolve with true once a key was entered (false: cancelled). */
  function askForKey() {
    if (state.keyPrompt) return state.keyPrompt; // the models list and a question may both ask
    ui.keyForm.hidden = false;
    ui.key.value = "";
    ui.key.focus();
    state.keyPrompt = new Promise((resolve) => { state.keyWaiter = resolve; });
    return state.keyPrompt;
  }

  function closeKeyForm(entered) {
    ui.keyForm.hidden = true;
    state.keyWaiter?.(entered);
    state.keyWaiter = null;
    state.keyPrompt = null;
  }

  ui.keyForm.addEventListener("submit", (event) => {
    event.preventDefault();
    if (!ui.key.value.trim()) return;
    state.key = ui.key.value.trim();
    ui.key.value = "";
    closeKeyForm(true);
  });
  $("key-cancel").addEventListener("click", () => closeKeyForm(false));

  /** fetch, asking for the client key (and retrying) as long as the gateway answers 401;
   * `onAttempt` is called before each try. */
  async function fetchWithKey(url, init, onAttempt) {
    for (;;) {
      onAttempt?.(); // timings start again after the person typed a key
      const response = await fetch(url, { ...init, headers: headers(init.headers) });
      if (response.status !== 401) return response;
      await response.body?.cancel();
      if (!(await askForKey())) return response;
    }
  }

  async function loadModels() {
    try {
      const response = await fetchWithKey("/v1/models", { headers: {} });
      if (!response.ok) {
        const { code, message, status } = await readError(response);
        ui.modelsNote.textContent = `Models could not be listed: ${describe(code, message, status).title}`;
        return;
      }
      const { data } = await response.json();
      for (const model of data || []) ui.model.append(new Option(model.id, model.id));
      ui.modelsNote.textContent = `${(data || []).length} models`;
    } catch {
      ui.modelsNote.textContent = "Models could not be listed: the gateway is unreachable.";
    }
  }

  function showTask() {
    const task = ui.task.value;
    $("code-field").hidden = task === "ask";
    $("error-field").hidden = task !== "fix";
    ui.question.placeholder = DEFAULT_QUESTION[task] || "How do I read a file line by line in Python?";
  }

  function showProblem(code, message, status) {
    const { title, detail } = describe(code, message, status);
    $("problem-title").textContent = title;
    $("problem-detail").textContent = detail;
    ui.problem.hidden = false;
  }

  function resetOutput() {
    ui.problem.hidden = true;
    ui.answer.replaceChildren();
    ui.reasoning.textContent = "";
    ui.reasoningBox.hidden = true;
    ui.sources.replaceChildren();
    ui.sources.hidden = true;
    ui.stats.textContent = "";
  }

  function setState(name) {
    ui.output.dataset.state = name;
    const busy = name === "waiting" || name === "streaming";
    ui.send.disabled = busy;
    ui.stop.disabled = !busy;
  }

  function requestBody() {
    const task = ui.task.value;
    const body = {
      question: ui.question.value.trim() || DEFAULT_QUESTION[task] || "",
      session_id: state.sessionId,
      task,
    };
    if (ui.model.value) body.model = ui.model.value;
    if (state.history.length) body.history = state.history.slice(-20);
    if (task !== "ask" && ui.code.value.trim()) body.code = ui.code.value;
    if (task === "fix" && ui.error.value.trim()) body.error = ui.error.value;
    return body;
  }

  async function send() {
    const body = requestBody();
    if (!body.question) {
      ui.question.focus();
      return;
    }
    resetOutput();
    setState("waiting");
    const controller = new AbortController();
    state.controller = controller;
    let started = performance.now();
    const run = { text: "", reasoning: "", firstAt: 0, end: null, failed: false, frame: 0 };
    const paint = () => {
      run.frame = 0;
      renderMarkdown(run.text, ui.answer);
      ui.reasoning.textContent = run.reasoning;
    };
    const schedule = () => { if (!run.frame) run.frame = requestAnimationFrame(paint); };
    const onEvent = ({ type, data }) => {
      let payload;
      try { payload = JSON.parse(data); } catch { return; }
      if (type === "message" && (payload.type === "chunk" || payload.type === "reasoning")) {
        if (!run.firstAt) { run.firstAt = performance.now(); setState("streaming"); }
        if (payload.type === "chunk") run.text += payload.content;
        else { run.reasoning += payload.content; ui.reasoningBox.hidden = false; }
        schedule();
      } else if (type === "sources") {
        showSources(payload.sources);
      } else if (type === "error") {
        run.failed = true;
        showProblem(payload.code, payload.message, 0);
      } else if (type === "final_end") {
        run.end = payload;
      }
    };
    let outcome = "done";
    try {
      const response = await fetchWithKey("/stream-ask", {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
        body: JSON.stringify(body),
        signal: controller.signal,
      }, () => { started = performance.now(); });
      if (controller.signal.aborted) {
        outcome = "stopped";
      } else if (!response.ok) {
        const { code, message, status } = await readError(response);
        showProblem(code, message, status);
        outcome = "error";
      } else {
        const parse = sseParser(onEvent);
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          parse(value);
        }
        if (!run.end) {
          showProblem("stream_cut", "", 0);
          outcome = "error";
        } else if (run.failed) {
          outcome = "error";
        }
      }
    } catch (err) {
      if (controller.signal.aborted) outcome = "stopped";
      else {
        showProblem("network", String(err && err.message ? err.message : err), 0);
        outcome = "error";
      }
    } finally {
      state.controller = null;
    }
    if (run.frame) cancelAnimationFrame(run.frame);
    paint();
    if (run.text) {
      state.history.push({ role: "user", content: body.question }, { role: "assistant", content: run.text });
    }
    showStats(run, started, outcome);
    setState(outcome);
  }

  function showSources(sources) {
    ui.sources.replaceChildren();
    for (const source of sources || []) {
      ui.sources.append(el("li", "", source.title || source.url || source.id || "source"));
    }
    ui.sources.hidden = !ui.sources.childElementCount;
  }

  function showStats(run, started, outcome) {
    const parts = [];
    if (run.firstAt) parts.push(`first token ${Math.round(run.firstAt - started)} ms`);
    const usage = run.end && run.end.usage;
    if (usage) parts.push(`${usage.output_tokens} tokens out, ${usage.input_tokens} in`);
    if (run.end) parts.push(`finish: ${run.end.finish_reason}`);
    if (outcome === "stopped") parts.push("stopped");
    parts.push(`${((performance.now() - started) / 1000).toFixed(1)} s`);
    ui.stats.textContent = parts.join(" · ");
  }

  ui.form.addEventListener("submit", (event) => {
    event.preventDefault();
    send();
  });
  ui.form.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      if (!ui.send.disabled) send();
    }
  });
  ui.stop.addEventListener("click", () => {
    state.controller?.abort();
    if (state.keyPrompt) closeKeyForm(false);
  });
  ui.clear.addEventListener("click", () => {
    state.controller?.abort();
    state.history = [];
    state.sessionId = crypto.randomUUID ? crypto.randomUUID() : String(Math.random()).slice(2);
    resetOutput();
    setState("idle");
  });
  ui.task.addEventListener("change", showTask);
  showTask();
  loadModels();
})();
