// Parses a Mermaid diagram from standard input with Mermaid's own parser (under jsdom, as
// no browser is needed to parse). Exit 0: accepted; exit 1: rejected, with the reason.
import fs from 'node:fs';
import { JSDOM } from 'jsdom';

const dom = new JSDOM('<!doctype html><html><body></body></html>');
globalThis.window = dom.window;
globalThis.document = dom.window.document;
const { default: mermaid } = await import('mermaid');

const text = fs.readFileSync(0, 'utf8');
try {
  const result = await mermaid.parse(text);
  console.log(`accepted: ${result.diagramType}`);
} catch (e) {
  console.error(`rejected: ${e.message ?? e}`);
  process.exit(1);
}
