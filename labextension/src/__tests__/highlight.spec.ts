/**
 * The prompt-cell parser: Markdown whose first line may be the magic line. The editor wiring is
 * checked in the browser test; here, the syntax tree the highlighter styles.
 */
import { language } from '@codemirror/language';
import { EditorState } from '@codemirror/state';
import { describe, expect, it } from 'vitest';

import {
  isPromptDoc,
  promptParser,
  queryMTHighlight,
  TOKEN_NODES
} from '../highlight';

function nodes(text: string): [string, string][] {
  const out: [string, string][] = [];
  promptParser.parse(text).iterate({
    enter: node => {
      if (node.name !== 'Document') {
        out.push([node.name, text.slice(node.from, node.to)]);
      }
    }
  });
  return out;
}

describe('promptParser', () => {
  it('parses the first line as the magic block with its tokens', () => {
    const tree = nodes(
      '%%querymt echo-wasm -o reply\n# Title\nSome *emphasis*.'
    );
    expect(tree.slice(0, 5)).toEqual([
      ['QueryMTMagic', '%%querymt echo-wasm -o reply'],
      [TOKEN_NODES.magic, '%%querymt'],
      [TOKEN_NODES.target, 'echo-wasm'],
      [TOKEN_NODES.option, '-o'],
      [TOKEN_NODES.value, 'reply']
    ]);
    const names = tree.map(([name]) => name);
    expect(names).toContain('ATXHeading1');
    expect(names).toContain('Emphasis');
  });

  it('keeps the body Markdown right after the magic line (no setext heading)', () => {
    const names = nodes('%%querymt\n---\ntext').map(([name]) => name);
    expect(names).toContain('HorizontalRule');
    expect(names).not.toContain('SetextHeading2');
  });

  it('reads a magic-looking line elsewhere as text', () => {
    const names = nodes('hello\n%%querymt echo').map(([name]) => name);
    expect(names).not.toContain('QueryMTMagic');
  });
});

describe('queryMTHighlight', () => {
  it('builds a state with the extension and tells prompt documents apart', () => {
    const state = EditorState.create({
      doc: '%%querymt\nhi',
      extensions: queryMTHighlight()
    });
    expect(isPromptDoc(state.doc)).toBe(true);
    const edited = state.update({
      changes: { from: 0, to: 2, insert: '' }
    }).state;
    expect(isPromptDoc(edited.doc)).toBe(false);
  });

  it('switches the language to the prompt language while the first line is the magic', () => {
    const plain = EditorState.create({
      doc: 'print(1)',
      extensions: queryMTHighlight()
    });
    expect(plain.facet(language)).toBeNull();
    const prompt = plain.update({
      changes: { from: 0, to: 8, insert: '%%querymt echo-wasm\nhi' }
    }).state;
    expect(prompt.facet(language)?.name).toBe('querymt-prompt');
    const typing = prompt.update({
      changes: { from: prompt.doc.length, insert: ' there' }
    }).state;
    expect(typing.facet(language)?.name).toBe('querymt-prompt');
    const back = typing.update({
      changes: { from: 0, to: 2, insert: '' }
    }).state;
    expect(back.facet(language)).toBeNull();
  });
});
