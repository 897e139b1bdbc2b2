/**
 * The request of each command: a task, the question (the user's or the configured prompt), and
 * the code and traceback as their own fields, so that the gateway builds the model's prompt.
 * No `vscode` import: tested in Node.
 */

import type { AskRequest, CodeContext, Task } from "./protocol";

/** The configured question of each task (setting `tidegate.prompts`). */
export type TaskPrompts = Record<Exclude<Task, "ask" | "generate">, string>;

/** Used when the setting is absent or empty. */
export const DEFAULT_PROMPTS: TaskPrompts = {
  fix: "Fix this error. Say in one or two sentences what causes it, then give the corrected code in one fenced code block.",
  explain: "Explain what this code does, step by step, and point out anything surprising.",
  review: "Review this file: list bugs, risky constructs and readability problems, most important first, each with a concrete fix.",
};

/** What a command knows about the editor when it runs. */
export interface EditorState {
  file?: string;
  language?: string;
  /** The selected text ("" when nothing is selected). */
  selection: string;
  /** The whole document. */
  document: string;
}

/** The fields every request of a session shares. */
export interface SessionFields {
  model?: string;
  session_id?: string;
  max_tokens?: number;
}

/** The surrounding file is sent along with a selection only up to this size. */
export const MAX_CONTEXT_CHARS = 60_000;

function context(editor: EditorState, code: string): CodeContext {
  const whole = code === editor.document || editor.document.length > MAX_CONTEXT_CHARS;
  return {
    file: editor.file,
    language: editor.language,
    selection: editor.selection || undefined,
    code: whole ? undefined : editor.document,
  };
}

/** The request of "tidegate: Ask": the question, with the selection (if any) as context. */
export function askRequest(question: string, editor: EditorState | undefined, session: SessionFields): AskRequest {
  const request: AskRequest = { ...session, question, task: "ask" };
  if (editor?.selection) {
    request.code = editor.selection;
    request.context = { file: editor.file, language: editor.language, selection: editor.selection };
  }
  return request;
}

/** The request of "tidegate: Fix this error": the selection, or the whole file, and the
 * traceback (or the Problems report). */
export function fixRequest(editor: EditorState, traceback: string, prompts: Partial<TaskPrompts>, session: SessionFields): AskRequest {
  const code = editor.selection || editor.document;
  return {
    ...session,
    question: prompts.fix?.trim() || DEFAULT_PROMPTS.fix,
    task: "fix",
    code,
    error: traceback,
    context: context(editor, code),
  };
}

/** The request of "tidegate: Explain selection" (the whole file when nothing is selected). */
export function explainRequest(editor: EditorState, prompts: Partial<TaskPrompts>, session: SessionFields): AskRequest {
  const code = editor.selection || editor.document;
  return { ...session, question: prompts.explain?.trim() || DEFAULT_PROMPTS.explain, task: "explain", code, context: context(editor, code) };
}

/** The request of "tidegate: Review file": the whole document. */
export function reviewRequest(editor: EditorState, prompts: Partial<TaskPrompts>, session: SessionFields): AskRequest {
  return {
    ...session,
    question: prompts.review?.trim() || DEFAULT_PROMPTS.review,
    task: "review",
    code: editor.document,
    context: { file: editor.file, language: editor.language },
  };
}
