/** The answer panel: one webview beside the editor, created on first use and reused. */

import { randomBytes } from "node:crypto";
import * as vscode from "vscode";

import type { HostMessage, PanelMessage } from "./messages";

/** The webview that shows answers; `post` sends it a message, `onMessage` hears back. */
export class AnswerPanel {
  private panel: vscode.WebviewPanel | undefined;
  private readonly listeners: ((message: PanelMessage) => void)[] = [];

  constructor(private readonly extensionUri: vscode.Uri) {}

  /** Be told what the panel asks for (Stop, Insert, Replace selection, Copy). */
  onMessage(listener: (message: PanelMessage) => void): void {
    this.listeners.push(listener);
  }

  /** Show the panel (creating it if needed) without taking the focus from the editor. */
  reveal(): void {
    if (this.panel) {
      this.panel.reveal(vscode.ViewColumn.Beside, true);
      return;
    }
    const media = vscode.Uri.joinPath(this.extensionUri, "media");
    const dist = vscode.Uri.joinPath(this.extensionUri, "dist");
    const panel = vscode.window.createWebviewPanel(
      "tidegate.answer",
      "tidegate",
      { viewColumn: vscode.ViewColumn.Beside, preserveFocus: true },
      { enableScripts: true, retainContextWhenHidden: true, localResourceRoots: [media, dist] },
    );
    panel.webview.html = this.html(panel.webview, media, dist);
    panel.webview.onDidReceiveMessage((message: PanelMessage) => {
      for (const listener of this.listeners) listener(message);
    });
    panel.onDidDispose(() => {
      this.panel = undefined;
      for (const listener of this.listeners) listener({ type: "stop" });
    });
    this.panel = panel;
  }

  /** Send the panel a message (ignored when it is closed). */
  post(message: HostMessage): void {
    void this.panel?.webview.postMessage(message);
  }

  private html(webview: vscode.Webview, media: vscode.Uri, dist: vscode.Uri): string {
    const nonce = randomBytes(18).toString("base64");
    const script = webview.asWebviewUri(vscode.Uri.joinPath(dist, "webview.js"));
    const style = webview.asWebviewUri(vscode.Uri.joinPath(media, "panel.css"));
    const csp = [
      "default-src 'none'",
      `style-src ${webview.cspSource}`,
      `script-src 'nonce-${nonce}'`,
      `img-src ${webview.cspSource} data:`, // no remote images: an answer cannot make requests
      `font-src ${webview.cspSource}`,
    ].join("; ");
    return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="${csp}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="${style.toString()}">
<title>tidegate</title>
</head>
<body data-state="idle">
<div class="bar"><button id="stop" disabled>Stop</button><span id="status"></span></div>
<main id="turns"></main>
<script nonce="${nonce}" src="${script.toString()}"></script>
</body>
</html>`;
  }
}
