/**
 * Finding a Python traceback in text someone copied (a terminal, a log) and turning the
 * Problems list into one, for the "Fix this error" command. No `vscode` import: tested in Node.
 */

const HEADER = /^Traceback \(most recent call last\):\s*$/;
/** The last line of a traceback: `ValueError: bad`, `mod.CustomError`, `KeyboardInterrupt`. */
const EXCEPTION = /^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Warning|Iteration)|[A-Za-z_][\w.]*\.[A-Z]\w*)(?::.*)?$/;
const FRAME = /^\s+File "[^"]+", line \d+/;

/**
 * The last Python traceback in `text`: from its last `Traceback (most recent call last):` line
 * through the exception line, keeping the chained tracebacks just before it (`During handling
 * of the above exception...`). Also a bare `SyntaxError` report (`File "x.py", line 3` ...
 * `SyntaxError: ...`), which has no header. `undefined` when there is none.
 */
export function findTraceback(text: string): string | undefined {
  const lines = text.split(/\r\n|\r|\n/);
  let header = -1;
  for (let i = lines.length - 1; i >= 0; i--) {
    if (HEADER.test(lines[i].trim())) {
      header = i;
      break;
    }
  }
  if (header < 0) return syntaxErrorReport(lines);
  let end = -1;
  for (let i = header + 1; i < lines.length; i++) {
    const line = lines[i];
    if (!line.startsWith(" ") && EXCEPTION.test(line.trim())) {
      end = i;
      break;
    }
  }
  if (end < 0) return undefined;
  let start = header;
  // Chained exceptions: keep earlier tracebacks that lead to this one.
  for (;;) {
    const above = previousHeader(lines, start);
    if (above < 0) break;
    start = above;
  }
  return lines.slice(start, end + 1).join("\n").trimEnd();
}

function previousHeader(lines: string[], start: number): number {
  let i = start - 1;
  while (i >= 0 && lines[i].trim() === "") i--;
  if (i < 0 || !/^(During handling of the above exception|The above exception was the direct cause)/.test(lines[i])) {
    return -1;
  }
  for (let j = i - 1; j >= 0; j--) {
    if (HEADER.test(lines[j].trim())) return j;
  }
  return -1;
}

function syntaxErrorReport(lines: string[]): string | undefined {
  for (let i = lines.length - 1; i >= 0; i--) {
    if (!/^(SyntaxError|IndentationError|TabError)\b/.test(lines[i].trim())) continue;
    for (let j = i - 1; j >= Math.max(0, i - 6); j--) {
      if (FRAME.test(lines[j]) || /^\s*File "[^"]+", line \d+/.test(lines[j])) {
        return lines.slice(j, i + 1).join("\n").trimEnd();
      }
    }
  }
  return undefined;
}

/** A problem from VS Code's Problems list, reduced to what a prompt needs. */
export interface Problem {
  file: string;
  /** 1-based. */
  line: number;
  message: string;
  source?: string;
}

/** The problems as a short report the model can read, one per line:
 * `app.py:3: "x" is not defined (Pylance)`. */
export function formatProblems(problems: Problem[]): string {
  return problems
    .map((p) => `${p.file}:${p.line}: ${p.message.replace(/\s+/g, " ").trim()}${p.source ? ` (${p.source})` : ""}`)
    .join("\n");
}
