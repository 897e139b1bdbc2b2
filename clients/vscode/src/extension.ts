/**
 * The tidegate extension: commands that ask the gateway about the code in the editor and stream
 * the answer into a panel. The protocol lives in protocol.ts, requests in prompts.ts,
 * traceback finding in traceback.ts; this module is the VS Code glue.
 */

import { randomUUID } from "node:crypto";
import * as vscode from "vscode";

import type { PanelMessage } from "./messages";
import { statsLine } from "./messages";
import { AnswerPanel } from "./panel";
import {
  askRequest,
  explainRequest,
  fixRequest,
  reviewRequest,
  type EditorState,
  type SessionFields,
  type TaskPrompts,
} from "./prompts";
import { TidegateClient, TidegateError, describeError, runStream, type AskRequest, type HistoryMessage } from "./protocol";
import { findTraceback, formatProblems } from "./traceback";

const KEY_SECRET = "tidegate.clientKey";
const SESSION_KEY = "tidegate.sessionId";
/** Earlier turns sent with a question (the gateway passes them to models that take them). */
const HISTORY_MESSAGES = 12;

/** Called by VS Code on the first tidegate command. */
export function activate(context: vscode.ExtensionContext): void {
  const assistant = new Assistant(context);
  const commands: [string, () => Promise<void> | void][] = [
    ["tidegate.ask", () => assistant.ask()],
    ["tidegate.fixError", () => assistant.fixError()],
    ["tidegate.explainSelection", () => assistant.explainSelection()],
    ["tidegate.reviewFile", () => assistant.reviewFile()],
    ["tidegate.stop", () => assistant.stop()],
    ["tidegate.newSession", () => assistant.newSession()],
    ["tidegate.chooseModel", () => assistant.chooseModel()],
    ["tidegate.setClientKey", () => assistant.setClientKey()],
  ];
  for (const [id, run] of commands) context.subscriptions.push(vscode.commands.registerCommand(id, run));
  context.subscriptions.push(
    vscode.window.onDidChangeActiveTextEditor((editor) => {
      if (editor) assistant.lastEditor = editor;
    }),
  );
}

/** Nothing to release: the panel and the commands are disposed with the context. */
export function deactivate(): void {}

class Assistant {
  lastEditor: vscode.TextEditor | undefined = vscode.window.activeTextEditor;
  private readonly panel: AnswerPanel;
  private running: AbortController | undefined;
  private history: HistoryMessage[] = [];

  constructor(private readonly context: vscode.ExtensionContext) {
    this.panel = new AnswerPanel(context.extensionUri);
    this.panel.onMessage((message) => void this.onPanelMessage(message));
  }

  async ask(): Promise<void> {
    const question = await vscode.window.showInputBox({ title: "tidegate: Ask", prompt: "Your question (the selection, if any, is sent with it)" });
    if (!question?.trim()) return;
    const editor = this.editorState(false);
    await this.run("Ask", question, askRequest(question, editor, await this.session()));
  }

  async fixError(): Promise<void> {
    const editor = this.editorState(true);
    if (!editor) return;
    const traceback = await this.findError(editor);
    if (traceback === undefined) return;
    const request = fixRequest(editor, traceback, this.prompts(), await this.session());
    await this.run("Fix this error", traceback.split("\n").at(-1) ?? traceback, request);
  }

  async explainSelection(): Promise<void> {
    const editor = this.editorState(true);
    if (!editor) return;
    const request = explainRequest(editor, this.prompts(), await this.session());
    await this.run("Explain", firstLine(request.code ?? ""), request);
  }

  async reviewFile(): Promise<void> {
    const editor = this.editorState(true);
    if (!editor) return;
    await this.run("Review", editor.file ?? "this file", reviewRequest(editor, this.prompts(), await this.session()));
  }

  stop(): void {
    this.running?.abort();
  }

  async newSession(): Promise<void> {
    this.stop();
    this.history = [];
    await this.context.workspaceState.update(SESSION_KEY, randomUUID());
    this.panel.post({ type: "clear" });
  }

  async chooseModel(): Promise<void> {
    try {
      const models = await (await this.client()).models();
      const picked = await vscode.window.showQuickPick(
        [{ label: "(gateway default)", id: "" }, ...models.map((m) => ({ label: m.id, description: m.owned_by, id: m.id }))],
        { title: "tidegate: Choose model" },
      );
      if (picked) await this.config().update("model", picked.id, vscode.ConfigurationTarget.Workspace);
    } catch (err) {
      await this.showFailure(err);
    }
  }

  async setClientKey(): Promise<boolean> {
    const key = await vscode.window.showInputBox({
      title: "tidegate: Set client key",
      prompt: "A client key of the gateway (auth.api_keys). Kept in VS Code's secret storage; leave empty to remove it.",
      password: true,
      ignoreFocusOut: true,
    });
    if (key === undefined) return false;
    if (key.trim()) await this.context.secrets.store(KEY_SECRET, key.trim());
    else await this.context.secrets.delete(KEY_SECRET);
    return Boolean(key.trim());
  }

  // -- one request ------------------------------------------------------------------------------

  private async run(title: string, question: string, request: AskRequest): Promise<void> {
    this.running?.abort();
    const controller = new AbortController();
    this.running = controller;
    if (this.config().get<boolean>("sendHistory", true) && this.history.length > 0) {
      request.history = this.history.slice(-HISTORY_MESSAGES);
    }
    this.panel.reveal();
    this.panel.post({ type: "start", title, question, detail: request.model || "gateway default model" });
    const started = Date.now();
    try {
      const result = await runStream(await this.client(), request, {
        signal: controller.signal,
        onEvent: (event) => {
          if (event.type === "chunk") this.panel.post({ type: "chunk", text: event.content });
          else if (event.type === "reasoning") this.panel.post({ type: "reasoning", text: event.content });
          else if (event.type === "sources") this.panel.post({ type: "sources", titles: event.sources.map((s) => s.title ?? s.url ?? s.id ?? "source") });
          else if (event.type === "error") this.panel.post({ type: "problem", text: describeError(event) });
        },
      });
      const stats = statsLine({ ...result, elapsedMs: Date.now() - started });
      const state = result.stopped ? "stopped" : result.error ? "error" : "done";
      this.panel.post({ type: "end", state, stats: result.stopped ? `${stats} · stopped` : stats });
      if (result.text) {
        this.history.push({ role: "user", content: request.question }, { role: "assistant", content: result.text });
      }
    } catch (err) {
      this.panel.post({ type: "problem", text: err instanceof TidegateError ? describeError(err) : String(err) });
      this.panel.post({ type: "end", state: "error", stats: "" });
      if (err instanceof TidegateError && err.status === 401) {
        const choice = await vscode.window.showErrorMessage(describeError(err), "Set client key");
        if (choice && (await this.setClientKey())) await this.run(title, question, request);
      }
    } finally {
      if (this.running === controller) this.running = undefined;
    }
  }

  private async onPanelMessage(message: PanelMessage): Promise<void> {
    if (message.type === "stop") {
      this.stop();
      return;
    }
    if (message.type === "copy") {
      await vscode.env.clipboard.writeText(message.code);
      return;
    }
    const editor = this.lastEditor ?? vscode.window.visibleTextEditors[0];
    if (!editor) {
      void vscode.window.showWarningMessage("tidegate: open an editor to put the code in.");
      return;
    }
    await editor.edit((edit) => {
      if (message.type === "replace") {
        for (const selection of editor.selections) edit.replace(selection, message.code);
      } else {
        edit.insert(editor.selection.active, message.code);
      }
    });
    await vscode.window.showTextDocument(editor.document, editor.viewColumn);
  }

  // -- what the commands read -------------------------------------------------------------------

  private config(): vscode.WorkspaceConfiguration {
    return vscode.workspace.getConfiguration("tidegate");
  }

  private prompts(): Partial<TaskPrompts> {
    return this.config().get<Partial<TaskPrompts>>("prompts") ?? {};
  }

  private async client(): Promise<TidegateClient> {
    const baseUrl = this.config().get<string>("gatewayUrl") || "http://127.0.0.1:8080";
    return new TidegateClient({ baseUrl, apiKey: await this.context.secrets.get(KEY_SECRET) });
  }

  /** The model, the session (one per workspace, kept across restarts) and the token limit. */
  private async session(): Promise<SessionFields> {
    let sessionId = this.context.workspaceState.get<string>(SESSION_KEY);
    if (!sessionId) {
      sessionId = randomUUID();
      await this.context.workspaceState.update(SESSION_KEY, sessionId);
    }
    const maxTokens = this.config().get<number>("maxTokens") || undefined;
    return { model: this.config().get<string>("model") || undefined, session_id: sessionId, max_tokens: maxTokens };
  }

  private editorState(required: boolean): EditorState | undefined {
    const editor = vscode.window.activeTextEditor ?? this.lastEditor;
    if (!editor) {
      if (required) void vscode.window.showWarningMessage("tidegate: open a file first.");
      return undefined;
    }
    this.lastEditor = editor;
    const document = editor.document;
    return {
      file: vscode.workspace.asRelativePath(document.uri),
      language: document.languageId,
      selection: document.getText(editor.selection),
      document: document.getText(),
    };
  }

  /**
   * The error to fix: a traceback selected in the terminal, else one on the clipboard, else the
   * Problems list's errors for this file, else what the person pastes. `undefined`: cancelled.
   */
  private async findError(editor: EditorState): Promise<string | undefined> {
    const clipboard = await vscode.env.clipboard.readText();
    if (vscode.window.activeTerminal) {
      // The terminal's selection is reachable only through the clipboard: copy it, read it,
      // and put the person's clipboard back.
      await vscode.commands.executeCommand("workbench.action.terminal.copySelection");
      const selected = await vscode.env.clipboard.readText();
      if (selected !== clipboard) await vscode.env.clipboard.writeText(clipboard);
      const fromTerminal = findTraceback(selected);
      if (fromTerminal) return fromTerminal;
    }
    const fromClipboard = findTraceback(clipboard);
    if (fromClipboard) return fromClipboard;
    const active = vscode.window.activeTextEditor ?? this.lastEditor;
    if (active) {
      const problems = vscode.languages
        .getDiagnostics(active.document.uri)
        .filter((d) => d.severity === vscode.DiagnosticSeverity.Error)
        .map((d) => ({ file: editor.file ?? "", line: d.range.start.line + 1, message: d.message, source: d.source }));
      if (problems.length > 0) return formatProblems(problems);
    }
    const pasted = await vscode.window.showInputBox({
      title: "tidegate: Fix this error",
      prompt: "No traceback found in the terminal selection, the clipboard or the Problems list: paste the error message",
      ignoreFocusOut: true,
    });
    return pasted?.trim() ? pasted : undefined;
  }

  private async showFailure(err: unknown): Promise<void> {
    await vscode.window.showErrorMessage(err instanceof TidegateError ? describeError(err) : String(err));
  }
}

function firstLine(text: string): string {
  const line = text.trim().split("\n")[0] ?? "";
  return line.length > 80 ? `${line.slice(0, 77)}…` : line;
}
