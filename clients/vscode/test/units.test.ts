/** The pure parts of the extension: request building, prompts, tracebacks, rendering. */

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { DEFAULT_PROMPTS, askRequest, explainRequest, fixRequest, reviewRequest, type EditorState } from "../src/prompts";
import { TidegateClient, describeError } from "../src/protocol";
import { renderAnswer } from "../src/render";
import { findTraceback, formatProblems } from "../src/traceback";

const TRACEBACK = `Traceback (most recent call last):
  File "/home/me/stats.py", line 9, in <module>
    print(mean([]))
  File "/home/me/stats.py", line 4, in mean
    return sum(xs) / len(xs)
           ~~~~~~~~^~~~~~~~~
ZeroDivisionError: division by zero`;

describe("request building", () => {
  test("a stream request: JSON body without empty optional fields, the key as a bearer token", () => {
    const client = new TidegateClient({ baseUrl: "http://gw:8080/", apiKey: "k-123" });
    const { url, init } = client.buildRequest(
      "/stream-ask",
      { question: "Hi", model: "", session_id: "s1", history: [], max_tokens: 64, task: "ask" },
      "text/event-stream",
    );
    assert.equal(url, "http://gw:8080/stream-ask");
    assert.equal(init.method, "POST");
    assert.deepEqual(init.headers, {
      Accept: "text/event-stream",
      Authorization: "Bearer k-123",
      "Content-Type": "application/json",
    });
    assert.deepEqual(JSON.parse(String(init.body)), { question: "Hi", session_id: "s1", max_tokens: 64, task: "ask" });
  });

  test("no key, no Authorization header", () => {
    const { init } = new TidegateClient({ baseUrl: "http://gw" }).buildRequest("/v1/models");
    assert.deepEqual(init.headers, { Accept: "application/json" });
    assert.equal(init.method, "GET");
  });
});

describe("prompts", () => {
  const editor: EditorState = { file: "stats.py", language: "python", selection: "", document: "def mean(xs):\n    return sum(xs) / len(xs)\n" };

  test("fix sends the whole file without a selection, the traceback and the fix prompt", () => {
    const request = fixRequest(editor, TRACEBACK, {}, { model: "m", session_id: "s" });
    assert.equal(request.task, "fix");
    assert.equal(request.code, editor.document);
    assert.equal(request.error, TRACEBACK);
    assert.equal(request.question, DEFAULT_PROMPTS.fix);
    assert.deepEqual(request.context, { file: "stats.py", language: "python", selection: undefined, code: undefined });
    assert.equal(request.model, "m");
    assert.equal(request.session_id, "s");
  });

  test("a selection is the code, the file its context; configured prompts win", () => {
    const selected = { ...editor, selection: "return sum(xs) / len(xs)" };
    const request = explainRequest(selected, { explain: "  Explain briefly.  " }, {});
    assert.equal(request.code, selected.selection);
    assert.equal(request.question, "Explain briefly.");
    assert.equal(request.context?.code, editor.document);
    assert.equal(reviewRequest(selected, { review: "" }, {}).code, editor.document);
    assert.equal(reviewRequest(selected, { review: "" }, {}).question, DEFAULT_PROMPTS.review);
    assert.equal(askRequest("Why?", selected, {}).code, selected.selection);
    assert.equal(askRequest("Why?", undefined, {}).code, undefined);
  });
});

describe("tracebacks", () => {
  test("the last traceback of a terminal's text, with the prompt and output around it left out", () => {
    const text = `$ python old.py\nTraceback (most recent call last):\n  File "old.py", line 1\nKeyError: 'x'\n$ python stats.py\n${TRACEBACK}\n$ `;
    assert.equal(findTraceback(text), TRACEBACK);
  });

  test("CRLF text and chained exceptions", () => {
    const chained = `Traceback (most recent call last):\n  File "a.py", line 2, in <module>\n    int("x")\nValueError: invalid literal\n\nDuring handling of the above exception, another exception occurred:\n\n${TRACEBACK}`;
    assert.equal(findTraceback(chained.replace(/\n/g, "\r\n")), chained);
  });

  test("a SyntaxError report has no header; text without a traceback has none", () => {
    const report = `  File "/home/me/x.py", line 3\n    def f(:\n          ^\nSyntaxError: invalid syntax`;
    assert.equal(findTraceback(`python x.py\n${report}\n`), report);
    assert.equal(findTraceback("all good\n"), undefined);
    assert.equal(findTraceback("Traceback (most recent call last):\n  File \"a.py\", line 1"), undefined);
  });

  test("problems become one line each", () => {
    assert.equal(
      formatProblems([{ file: "a.py", line: 3, message: '"x" is not\n defined', source: "Pylance" }, { file: "a.py", line: 5, message: "bad" }]),
      'a.py:3: "x" is not defined (Pylance)\na.py:5: bad',
    );
  });
});

describe("rendering", () => {
  test("markdown with highlighted, indexed code blocks; raw HTML and script links stay text", () => {
    const { html, blocks } = renderAnswer(
      "The **cause**: `len(xs)` is 0.\n\n```python\ndef mean(xs):\n    return sum(xs) / len(xs) if xs else 0.0\n```\n\n" +
        '<img src=x onerror="alert(1)"> [click](javascript:alert(1)) [docs](https://docs.python.org)\n\n```\nplain <b>\n```',
    );
    assert.match(html, /<strong>cause<\/strong>/);
    assert.match(html, /<code>len\(xs\)<\/code>/);
    assert.match(html, /<span class="hljs-keyword">def<\/span>/);
    assert.match(html, /data-block="0"[\s\S]*data-action="insert"[\s\S]*data-action="replace"/);
    assert.ok(!html.includes("<img"), html);
    assert.ok(html.includes("&lt;img src=x onerror="), html);
    assert.ok(!/href="javascript/i.test(html), html);
    assert.match(html, /<a href="https:\/\/docs.python.org">docs<\/a>/);
    assert.match(html, /plain (&lt;|&#60;)b(&gt;|&#62;)/);
    assert.deepEqual(blocks, [
      { language: "python", code: "def mean(xs):\n    return sum(xs) / len(xs) if xs else 0.0\n" },
      { language: "", code: "plain <b>\n" },
    ]);
  });

  test("an unclosed fence while streaming is a code block so far", () => {
    const { blocks } = renderAnswer("Here:\n\n```python\nimport os\n");
    assert.deepEqual(blocks, [{ language: "python", code: "import os\n" }]);
  });

  test("a fence language cannot break out of its attribute or label", () => {
    const { html } = renderAnswer('```"><script>alert(1)</script>\nx\n```');
    assert.ok(!html.includes("<script>"), html);
  });
});

describe("describeError", () => {
  test("a sentence first, then the gateway's words and code", () => {
    assert.equal(
      describeError({ code: "model_not_found", message: "unknown model 'x'", status: 404 }),
      "That model is not configured on the gateway. unknown model 'x' (HTTP 404, model_not_found)",
    );
    assert.equal(describeError({ code: "weird", message: "", status: 503 }), "The gateway failed to answer. (HTTP 503, weird)");
    assert.equal(describeError({ code: "upstream_timeout", message: "idle 60s" }), "The model's service took too long to answer. idle 60s (upstream_timeout)");
  });
});
