/** The messages between the extension and its answer panel (a webview). No `vscode` import. */

/** The extension to the panel. */
export type HostMessage =
  | { type: "start"; title: string; question: string; detail: string }
  | { type: "chunk"; text: string }
  | { type: "reasoning"; text: string }
  | { type: "sources"; titles: string[] }
  | { type: "problem"; text: string }
  | { type: "end"; state: "done" | "stopped" | "error"; stats: string }
  | { type: "clear" };

/** The panel to the extension. */
export type PanelMessage =
  | { type: "stop" }
  | { type: "insert"; code: string }
  | { type: "replace"; code: string }
  | { type: "copy"; code: string };

/** One line of numbers about a finished answer:
 * `first token 120 ms · 53 tokens out, 5 in · finish: stop · 2.1 s`. */
export function statsLine(stats: {
  firstTokenMs: number | undefined;
  usage: { input_tokens: number; output_tokens: number } | null;
  finishReason: string;
  elapsedMs: number;
}): string {
  const parts: string[] = [];
  if (stats.firstTokenMs !== undefined) parts.push(`first token ${Math.round(stats.firstTokenMs)} ms`);
  if (stats.usage) parts.push(`${stats.usage.output_tokens} tokens out, ${stats.usage.input_tokens} in`);
  parts.push(`finish: ${stats.finishReason}`);
  parts.push(`${(stats.elapsedMs / 1000).toFixed(1)} s`);
  return parts.join(" · ");
}
