// tidegate playground: asks /stream-ask, or runs a workflow, and renders the answer as it streams.
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

  const TABLE_RULE = /^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$/;

  /** The cells of a table row: split on unescaped pipes, outer pipes dropped, `\|` a pipe. */
  function cells(line) {
    let row = line.trim();
    if (row.startsWith("|")) row = row.slice(1);
    if (row.endsWith("|") && !row.endsWith("\\|")) row = row.slice(0, -1);
    return row.split(/(?<!\\)\|/).map((cell) => cell.trim().replace(/\\\|/g, "|"));
  }

  /** A GFM table: a header row, a rule (`|---|:--:|`), then rows while lines hold a pipe. */
  function table(header, rows) {
    const node = el("table");
    const head = node.appendChild(el("thead")).appendChild(el("tr"));
    for (const cell of header) head.append(inline(cell, el("th")));
    const body = node.appendChild(el("tbody"));
    for (const row of rows) {
      const tr = body.appendChild(el("tr"));
      header.forEach((_, i) => tr.append(inline(row[i] ?? "", el("td"))));
    }
    return node;
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
      if (line.includes("|") && i + 1 < lines.length && TABLE_RULE.test(lines[i + 1]) && lines[i + 1].includes("|")) {
        endPara(); endList();
        const rows = [];
        for (i += 2; i < lines.length && lines[i].includes("|") && lines[i].trim(); i++) rows.push(cells(lines[i]));
        i--;
        blocks.append(table(cells(line), rows));
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
    key: $("key"), modelsNote: $("models-note"), workflowNote: $("workflow-note"),
    steps: $("steps"), progress: $("progress"),
  };
  const DEFAULT_QUESTION = {
    ask: "", generate: "", fix: "Fix this error.", explain: "Explain this code.", review: "Review this code.",
  };
  // A workflow's option in the chooser: its value is `workflow:<name>` (as the gateway's logs
  // name a run) and it is marked `data-kind="workflow"`, which is what the page goes by.
  const WORKFLOW_PREFIX = "workflow:";
  const state = {
    key: "", // the client key: in memory only, never stored
    current: null, // the request under way: { controller, workflow, streamId, cancelled, done }
    history: [],
    sessionId: crypto.randomUUID ? crypto.randomUUID() : String(Math.random()).slice(2),
    keyWaiter: null,
    keyPrompt: null,
    workflows: new Map(), // name -> { name, description, steps: [{ name, kind }] }
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

  /** GET one of the gateway's lists: `{ data }`, or `{ note, status }` saying why not. */
  async function fetchList(url, what) {
    try {
      const response = await fetchWithKey(url, { headers: {} });
      if (!response.ok) {
        const { code, message, status } = await readError(response);
        return { note: `${what} could not be listed: ${describe(code, message, status).title}`, status };
      }
      const { data } = await response.json();
      return { data: Array.isArray(data) ? data : [] };
    } catch {
      return { note: `${what} could not be listed: the gateway is unreachable.`, status: 0 };
    }
  }

  /** Fill the chooser: the models, then the workflows (when there are any) in a group; the
   * note says what was found once both lists are in. */
  async function loadChoices() {
    const notes = [];
    ui.modelsNote.textContent = "Loading models…";
    const models = await fetchList("/v1/models", "Models");
    if (models.data) {
      for (const model of models.data) ui.model.append(new Option(model.id, model.id));
      notes.push(`${models.data.length} models`);
    } else {
      notes.push(models.note);
    }
    if (models.status === 401) { // the person declined to give a key: do not ask again
      ui.modelsNote.textContent = notes.join(" · ");
      return;
    }
    const workflows = await fetchList("/v1/workflows", "Workflows");
    if (workflows.data?.length) {
      const group = el("optgroup");
      group.label = "Workflows";
      for (const workflow of workflows.data) {
        const option = new Option(workflow.name, WORKFLOW_PREFIX + workflow.name);
        option.dataset.kind = "workflow";
        option.dataset.name = workflow.name;
        state.workflows.set(workflow.name, workflow);
        group.append(option);
      }
      ui.model.append(group);
      notes.push(`${workflows.data.length} workflow${workflows.data.length === 1 ? "" : "s"}`);
    } else if (workflows.note) {
      notes.push(workflows.note);
    }
    ui.modelsNote.textContent = notes.join(" · ");
  }

  /** The workflow chosen in the model chooser, or null when it is a model. */
  function chosenWorkflow() {
    const option = ui.model.selectedOptions[0];
    if (!option || option.dataset.kind !== "workflow") return null;
    return state.workflows.get(option.dataset.name) || null;
  }

  /** Show the fields the chosen model and task take (a workflow takes only its input). */
  function showChoice() {
    const workflow = chosenWorkflow();
    const task = ui.task.value;
    ui.task.disabled = Boolean(workflow);
    $("code-field").hidden = Boolean(workflow) || task === "ask";
    $("error-field").hidden = Boolean(workflow) || task !== "fix";
    ui.workflowNote.hidden = !workflow;
    if (workflow) {
      const steps = (workflow.steps || []).map((s) => `${s.name} (${s.kind})`).join(" → ");
      ui.workflowNote.textContent = [workflow.description, steps && `Steps: ${steps}`].filter(Boolean).join(" ");
      ui.question.placeholder = `The input of the workflow ${workflow.name}`;
    } else {
      ui.question.placeholder = DEFAULT_QUESTION[task] || "How do I read a file line by line in Python?";
    }
  }

  function showProblem(code, message, status, title) {
    const described = describe(code, message, status);
    $("problem-title").textContent = title || described.title;
    $("problem-detail").textContent = described.detail;
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
    ui.steps.replaceChildren();
    ui.progress.textContent = "";
    ui.progress.hidden = true;
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

  /** Read an SSE response to its end, handing each event to `onEvent`. */
  async function readEvents(response, onEvent) {
    const parse = sseParser(onEvent);
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      parse(value);
    }
  }

  /** Start a request: the page's record of it, for Stop. */
  function begin(workflow) {
    let finish;
    const current = {
      controller: new AbortController(),
      workflow,
      streamId: "",
      cancelled: false,
      done: new Promise((resolve) => { finish = resolve; }),
    };
    current.finish = finish;
    state.current = current;
    return current;
  }

  function send() {
    const workflow = chosenWorkflow();
    return workflow ? runWorkflow(workflow) : ask();
  }

  async function ask() {
    const body = requestBody();
    if (!body.question) {
      ui.question.focus();
      return;
    }
    resetOutput();
    setState("waiting");
    const current = begin(null);
    const { controller } = current;
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
        await readEvents(response, onEvent);
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
      state.current = null;
      current.finish();
    }
    if (run.frame) cancelAnimationFrame(run.frame);
    paint();
    if (run.text) {
      state.history.push({ role: "user", content: body.question }, { role: "assistant", content: run.text });
    }
    showStats(run, started, outcome);
    setState(outcome);
  }

  // -- workflows: the native protocol (docs/protocol.md, "Workflows") --------------------------

  /** A duration as a person reads it: 850 ms, 2.4 s, 3 min 5 s. */
  function duration(ms) {
    if (ms < 1000) return `${Math.round(ms)} ms`;
    if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
    const s = Math.round(ms / 1000);
    return `${Math.floor(s / 60)} min ${s % 60} s`;
  }

  function tokens(usage) {
    return usage ? `${usage.output_tokens} tokens out, ${usage.input_tokens} in` : "";
  }

  const STEP_FAILURES = {
    step_failed: "Its code raised an error.",
    step_timeout: "It took longer than its time limit.",
  };

  /** A workflow's `error` event as a sentence naming the step. */
  function stepFailure({ step, code }) {
    const why = STEP_FAILURES[code] || EXPLAIN[code] || "";
    if (!step) return EXPLAIN[code] || "The workflow failed.";
    return `The step “${step}” failed.${why ? ` ${why}` : ""}`;
  }

  /** One step's part of the output: a heading (name, "step i of n"), its text, its numbers. */
  function stepView(index, total, name) {
    const section = el("section", "step");
    section.dataset.step = name;
    section.dataset.state = "running";
    const heading = el("h2", "step-title");
    heading.append(el("span", "step-name", name), el("span", "step-of", `step ${index} of ${total}`));
    const body = el("div", "answer step-body");
    const meta = el("p", "step-meta");
    section.append(heading, body, meta);
    ui.steps.append(section);
    return { section, body, meta, text: "", dirty: false };
  }

  async function runWorkflow(workflow) {
    const input = ui.question.value.trim();
    if (!input) {
      ui.question.focus();
      return;
    }
    resetOutput();
    setState("waiting");
    const current = begin(workflow.name);
    const { controller } = current;
    let started = performance.now();
    const run = { steps: new Map(), last: null, firstAt: 0, end: null, failed: false, frame: 0 };
    const paint = () => {
      run.frame = 0;
      for (const view of run.steps.values()) {
        if (!view.dirty) continue;
        view.dirty = false;
        renderMarkdown(view.text, view.body);
      }
    };
    const schedule = () => { if (!run.frame) run.frame = requestAnimationFrame(paint); };
    const onEvent = ({ type, data }) => {
      let payload;
      try { payload = JSON.parse(data); } catch { return; }
      if (type === "run_start") {
        if (payload.stream_id) current.streamId = payload.stream_id;
      } else if (type === "step_start") {
        if (!run.firstAt) { run.firstAt = performance.now(); setState("streaming"); }
        run.last = stepView(payload.index, payload.total, payload.name);
        run.steps.set(payload.name, run.last);
      } else if (type === "progress") {
        const parts = [`Step ${payload.index} of ${payload.total}: ${payload.step}`];
        parts.push(`${duration(payload.elapsed_ms)} elapsed`);
        if (typeof payload.eta_ms === "number") parts.push(`about ${duration(payload.eta_ms)} left`);
        ui.progress.textContent = parts.join(" · ");
        ui.progress.hidden = false;
      } else if (type === "chunk") {
        const view = run.steps.get(payload.step);
        if (!view) return;
        view.text += payload.content;
        view.dirty = true;
        schedule();
      } else if (type === "step_end") {
        const view = run.steps.get(payload.name);
        if (!view) return;
        view.section.dataset.state = payload.skipped ? "skipped" : "done";
        view.meta.textContent = payload.skipped
          ? "skipped"
          : [`done in ${duration(payload.duration_ms)}`, tokens(payload.usage)].filter(Boolean).join(" · ");
      } else if (type === "error") {
        run.failed = true;
        const view = payload.step && run.steps.get(payload.step);
        if (view) {
          view.section.dataset.state = "error";
          view.meta.textContent = "failed";
        }
        showProblem(payload.code, payload.message, 0, stepFailure(payload));
      } else if (type === "final_end") {
        run.end = payload;
      }
    };
    let outcome = "done";
    try {
      const response = await fetchWithKey(`/v1/workflows/${encodeURIComponent(workflow.name)}`, {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
        body: JSON.stringify({ input }),
        signal: controller.signal,
      }, () => { started = performance.now(); });
      current.streamId = response.headers.get("X-Tidegate-Stream-Id") || "";
      if (controller.signal.aborted) {
        outcome = current.cancelled ? "cancelled" : "stopped";
      } else if (!response.ok) {
        const { code, message, status } = await readError(response);
        showProblem(code, message, status);
        outcome = "error";
      } else {
        await readEvents(response, onEvent);
        if (!run.end) {
          showProblem("stream_cut", "", 0);
          outcome = "error";
        } else if (run.end.status === "cancelled") {
          outcome = "cancelled";
        } else if (run.failed || run.end.status !== "completed") {
          outcome = "error";
        }
      }
    } catch (err) {
      if (controller.signal.aborted) outcome = current.cancelled ? "cancelled" : "stopped";
      else {
        showProblem("network", String(err && err.message ? err.message : err), 0);
        outcome = "error";
      }
    } finally {
      state.current = null;
      current.finish();
    }
    if (run.frame) cancelAnimationFrame(run.frame);
    for (const view of run.steps.values()) view.dirty = true;
    paint();
    if (outcome === "cancelled" || outcome === "stopped") {
      for (const view of run.steps.values()) {
        if (view.section.dataset.state !== "running") continue;
        view.section.dataset.state = "cancelled";
        view.meta.textContent = outcome;
      }
    }
    ui.progress.hidden = true;
    const parts = [];
    const status = run.end ? run.end.status : outcome === "cancelled" ? "cancelled" : outcome === "stopped" ? "stopped" : "error";
    parts.push(`status: ${status}`);
    if (run.end?.usage) parts.push(tokens(run.end.usage));
    parts.push(`${((performance.now() - started) / 1000).toFixed(1)} s`);
    ui.stats.textContent = parts.join(" · ");
    setState(outcome);
  }

  const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

  /** Stop the request under way. A workflow run is cancelled at the gateway first
   * (`POST /v1/streams/{id}/cancel`: its steps stop and it ends with status cancelled), then
   * the fetch is aborted; a /stream-ask answer, or a run whose id is not known yet, is only
   * aborted (the gateway stops it when the connection closes). */
  async function stop() {
    const current = state.current;
    if (!current) return;
    if (!current.workflow || !current.streamId || current.stopping) {
      current.controller.abort();
      return;
    }
    current.stopping = true;
    ui.stop.disabled = true;
    let confirmed = false;
    try {
      const response = await fetch(`/v1/streams/${encodeURIComponent(current.streamId)}/cancel`, {
        method: "POST",
        headers: headers({}),
      });
      await response.body?.cancel();
      confirmed = response.ok; // 200 cancelled here, 202 cancelling on another instance
    } catch {
      confirmed = false;
    }
    current.cancelled = confirmed;
    // The run ends in-band (final_end, status cancelled): let that arrive, then abort either way.
    if (confirmed) await Promise.race([current.done, sleep(5000)]);
    current.controller.abort();
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
    stop();
    if (state.keyPrompt) closeKeyForm(false);
  });
  ui.clear.addEventListener("click", () => {
    stop();
    state.history = [];
    state.sessionId = crypto.randomUUID ? crypto.randomUUID() : String(Math.random()).slice(2);
    resetOutput();
    setState("idle");
  });
  ui.task.addEventListener("change", showChoice);
  ui.model.addEventListener("change", showChoice);
  showChoice();
  loadChoices();
})();
