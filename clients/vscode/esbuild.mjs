// Bundles the extension (Node, `vscode` external) and the answer panel's script (browser) into
// dist/, so that the .vsix ships no node_modules.
import { build } from "esbuild";

const common = { bundle: true, minify: true, sourcemap: false, legalComments: "eof", logLevel: "warning" };

await build({
  ...common,
  entryPoints: ["src/extension.ts"],
  outfile: "dist/extension.js",
  platform: "node",
  format: "cjs",
  target: "node18",
  external: ["vscode"],
});
await build({
  ...common,
  entryPoints: ["src/webview/main.ts"],
  outfile: "dist/webview.js",
  platform: "browser",
  format: "iife",
  target: "es2020",
});
