// highlight.js declares its core entry point's types only under "highlight.js".
declare module "highlight.js/lib/core" {
  import hljs from "highlight.js";
  export default hljs;
}
