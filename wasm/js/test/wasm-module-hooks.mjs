// Node module hooks that load a `.wasm` import as module workers do: its default export is the
// compiled WebAssembly.Module. Used by workerd.test.mjs to run the package's worker entry.
export async function load(url, context, nextLoad) {
  if (!url.endsWith(".wasm")) return nextLoad(url, context);
  const source =
    'import { readFileSync } from "node:fs";\n' +
    `export default new WebAssembly.Module(readFileSync(new URL(${JSON.stringify(url)})));\n`;
  return { format: "module", source, shortCircuit: true };
}
