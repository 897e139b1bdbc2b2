/**
 * The answer panel's script (bundled into dist/webview.js). Each request is a turn: the
 * question, then the answer re-rendered as markdown as chunks arrive (at most once a frame).
 * The HTML comes from `renderAnswer`, which escapes all text and allows no raw HTML; the
 * panel's CSP allows only this script.
 */

import type { HostMessage, PanelMessage } from "../messages";
import { renderAnswer, type CodeBlock } from "../render";

interface VsCodeApi {
  postMessage(message: PanelMessage): void;
}
declare function acquireVsCodeApi(): VsCodeApi;

const vscode = acquireVsCodeApi();
const turns = document.getElementById("turns") as HTMLElement;
const stop = document.getElementById("stop") as HTMLButtonElement;
const status = document.getElementById("status") as HTMLElement;

interface Turn {
  answer: HTMLElement;
  reasoning: HTMLElement;
  problem: HTMLElement;
  sources: HTMLElement;
  stats: HTMLElement;
  text: string;
  blocks: CodeBlock[];
  frame: number;
}

let turn: Turn | undefined;
/** Each answer element's turn, for the buttons of its code blocks. */
const turnOf = new WeakMap<HTMLElement, Turn>();

function element<K extends keyof HTMLElementTagNameMap>(tag: K, className: string, text?: string): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function startTurn(title: string, question: string, detail: string): Turn {
  const section = element("section", "turn");
  const head = element("div", "head");
  head.append(element("span", "title", title), element("span", "detail", detail));
  const details = element("details", "reasoning");
  details.hidden = true;
  details.append(element("summary", "", "Reasoning"));
  const reasoning = element("div", "reasoning-text");
  details.append(reasoning);
  const next: Turn = {
    answer: element("div", "answer"),
    reasoning,
    problem: element("div", "problem"),
    sources: element("ol", "sources"),
    stats: element("div", "stats"),
    text: "",
    blocks: [],
    frame: 0,
  };
  turnOf.set(next.answer, next);
  next.problem.hidden = true;
  next.sources.hidden = true;
  section.append(head, element("div", "question", question), details, next.answer, next.problem, next.sources, next.stats);
  turns.append(section);
  section.scrollIntoView({ block: "start" });
  return next;
}

function paint(current: Turn): void {
  current.frame = 0;
  const { html, blocks } = renderAnswer(current.text);
  current.answer.innerHTML = html; // escaped by the renderer: no raw HTML from the model
  current.blocks = blocks;
}

function setBusy(busy: boolean, text: string): void {
  stop.disabled = !busy;
  status.textContent = text;
  document.body.dataset.state = busy ? "streaming" : "idle";
}

window.addEventListener("message", (event: MessageEvent<HostMessage>) => {
  const message = event.data;
  switch (message.type) {
    case "start":
      turn = startTurn(message.title, message.question, message.detail);
      setBusy(true, "Waiting for the first token…");
      break;
    case "chunk":
      if (!turn) return;
      if (!turn.text) setBusy(true, "Streaming…");
      turn.text += message.text;
      if (!turn.frame) {
        const current = turn;
        turn.frame = requestAnimationFrame(() => paint(current));
      }
      break;
    case "reasoning":
      if (!turn) return;
      (turn.reasoning.parentElement as HTMLElement).hidden = false;
      turn.reasoning.textContent += message.text;
      break;
    case "sources":
      if (!turn) return;
      turn.sources.replaceChildren(...message.titles.map((t) => element("li", "", t)));
      turn.sources.hidden = message.titles.length === 0;
      break;
    case "problem":
      if (!turn) return;
      turn.problem.textContent = message.text;
      turn.problem.hidden = false;
      break;
    case "end":
      if (!turn) return;
      if (turn.frame) cancelAnimationFrame(turn.frame);
      paint(turn);
      turn.stats.textContent = message.stats;
      setBusy(false, message.state === "stopped" ? "Stopped." : "");
      break;
    case "clear":
      turns.replaceChildren();
      turn = undefined;
      setBusy(false, "New session.");
      break;
  }
});

stop.addEventListener("click", () => vscode.postMessage({ type: "stop" }));

// The code blocks' buttons, for every turn (each keeps the blocks of its last render).
turns.addEventListener("click", (event) => {
  const button = (event.target as HTMLElement).closest("button[data-action]");
  const holder = button?.closest<HTMLElement>(".code[data-block]");
  const section = holder?.closest<HTMLElement>(".turn");
  if (!button || !holder || !section) return;
  const answer = section.querySelector<HTMLElement>(".answer");
  const block = answer ? turnOf.get(answer)?.blocks[Number(holder.dataset.block)] : undefined;
  const action = button.getAttribute("data-action");
  if (!block || (action !== "insert" && action !== "replace" && action !== "copy")) return;
  vscode.postMessage({ type: action, code: block.code });
});
