/**
 * Markdown to HTML for the answer panel: markdown-it with raw HTML disabled (a model's `<img
 * onerror=...>` comes out as text) and only http(s)/mailto links, code fences highlighted by
 * highlight.js (which escapes what it returns). Each fenced block gets an index and the action
 * buttons of the panel. No DOM and no `vscode` here: the webview calls it, and Node tests it.
 */

import MarkdownIt from "markdown-it";
import hljs from "highlight.js/lib/core";
import bash from "highlight.js/lib/languages/bash";
import javascript from "highlight.js/lib/languages/javascript";
import json from "highlight.js/lib/languages/json";
import python from "highlight.js/lib/languages/python";
import pythonRepl from "highlight.js/lib/languages/python-repl";
import shell from "highlight.js/lib/languages/shell";
import typescript from "highlight.js/lib/languages/typescript";
import yaml from "highlight.js/lib/languages/yaml";

hljs.registerLanguage("python", python);
hljs.registerLanguage("python-repl", pythonRepl);
hljs.registerLanguage("javascript", javascript);
hljs.registerLanguage("typescript", typescript);
hljs.registerLanguage("json", json);
hljs.registerLanguage("bash", bash);
hljs.registerLanguage("shell", shell);
hljs.registerLanguage("yaml", yaml);

/** A fenced code block of the answer, as the panel's Insert/Replace actions need it. */
export interface CodeBlock {
  language: string;
  code: string;
}

const markdown = new MarkdownIt({ html: false, linkify: true, breaks: false });
markdown.validateLink = (url: string): boolean => /^(https?:|mailto:)/i.test(url.trim());

/** `text` with `& < > " '` escaped for HTML text and attribute values. */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** The code highlighted as HTML (escaped), or just escaped for a language it does not know. */
export function highlightCode(code: string, language: string): string {
  const lang = language.toLowerCase();
  const known = lang === "py" || lang === "python3" ? "python" : lang;
  if (known && hljs.getLanguage(known)) {
    return hljs.highlight(code, { language: known, ignoreIllegals: true }).value;
  }
  return escapeHtml(code);
}

interface RenderEnv {
  blocks: CodeBlock[];
}

markdown.renderer.rules.fence = (tokens, index, _options, env: RenderEnv) => {
  const token = tokens[index];
  const language = token.info.trim().split(/\s+/)[0] ?? "";
  const n = env.blocks.push({ language, code: token.content }) - 1;
  const label = language ? `<span class="lang">${escapeHtml(language)}</span>` : "";
  return (
    `<div class="code" data-block="${n}"><div class="actions">${label}` +
    `<button data-action="insert">Insert</button>` +
    `<button data-action="replace">Replace selection</button>` +
    `<button data-action="copy">Copy</button></div>` +
    `<pre><code class="hljs">${highlightCode(token.content, language)}</code></pre></div>\n`
  );
};

/** The answer as HTML, and its fenced code blocks in order (`data-block` indexes them). An
 * unclosed fence, as while an answer streams, renders as a code block so far. */
export function renderAnswer(text: string): { html: string; blocks: CodeBlock[] } {
  const env: RenderEnv = { blocks: [] };
  return { html: markdown.render(text, env), blocks: env.blocks };
}
