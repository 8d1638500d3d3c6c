import { describe, expect, it } from 'vitest';

import {
  isMagicLine,
  isPromptCell,
  parseMagicLine,
  promptCellSource,
  providerOfCell,
  shellWords,
  tokenizeMagicLine
} from '../magic';

describe('isMagicLine', () => {
  it('accepts the magic alone or followed by blanks', () => {
    expect(isMagicLine('%%querymt')).toBe(true);
    expect(isMagicLine('%%querymt echo-wasm')).toBe(true);
    expect(isMagicLine('%%querymt\techo-wasm')).toBe(true);
  });

  it('rejects other magics and text', () => {
    expect(isMagicLine('%%querymtx')).toBe(false);
    expect(isMagicLine('%querymt list')).toBe(false);
    expect(isMagicLine(' %%querymt')).toBe(false);
    expect(isMagicLine('print(1)')).toBe(false);
  });
});

describe('isPromptCell', () => {
  it('looks at the first line only', () => {
    expect(isPromptCell('%%querymt echo-wasm\nhello')).toBe(true);
    expect(isPromptCell('x = 1\n%%querymt echo-wasm')).toBe(false);
    expect(isPromptCell('')).toBe(false);
  });
});

describe('shellWords', () => {
  it('groups quoted words and keeps offsets', () => {
    expect(shellWords(' a "b c" d')).toEqual([
      { from: 1, to: 2, text: 'a' },
      { from: 3, to: 8, text: 'b c' },
      { from: 9, to: 10, text: 'd' }
    ]);
  });

  it('tolerates an unclosed quote', () => {
    expect(shellWords("--system 'be brief").map(w => w.text)).toEqual([
      '--system',
      'be brief'
    ]);
  });
});

describe('tokenizeMagicLine', () => {
  it('names the magic, the target, options and their values', () => {
    const line =
      '%%querymt echo-wasm:echo-1 -p temperature=0.2 --no-stream -o reply';
    const kinds = tokenizeMagicLine(line).map(t => [t.kind, t.text]);
    expect(kinds).toEqual([
      ['magic', '%%querymt'],
      ['target', 'echo-wasm:echo-1'],
      ['option', '-p'],
      ['value', 'temperature=0.2'],
      ['option', '--no-stream'],
      ['option', '-o'],
      ['value', 'reply']
    ]);
  });

  it('gives offsets into the line', () => {
    const line = '%%querymt  openai --chat notes';
    for (const token of tokenizeMagicLine(line)) {
      expect(line.slice(token.from, token.to)).toBe(token.text);
    }
  });

  it('treats --opt=value as one option token', () => {
    const kinds = tokenizeMagicLine('%%querymt --format=json echo').map(
      t => t.kind
    );
    expect(kinds).toEqual(['magic', 'option', 'target']);
  });

  it('returns nothing for a line that is not the magic', () => {
    expect(tokenizeMagicLine('%%time')).toEqual([]);
  });
});

describe('parseMagicLine', () => {
  it('splits NAME:MODEL and reads options', () => {
    const parsed = parseMagicLine(
      '%%querymt openai:gpt-4o-mini -f json --system "be brief" --no-interp'
    );
    expect(parsed?.provider).toBe('openai');
    expect(parsed?.model).toBe('gpt-4o-mini');
    expect(parsed?.options).toEqual({
      '-f': 'json',
      '--system': 'be brief',
      '--no-interp': true
    });
  });

  it('has no provider when the cell uses the default', () => {
    expect(parseMagicLine('%%querymt -o x')).toMatchObject({
      provider: null,
      model: null,
      options: { '-o': 'x' }
    });
  });

  it('returns null for other lines', () => {
    expect(parseMagicLine('%%bash')).toBeNull();
  });
});

describe('providerOfCell and promptCellSource', () => {
  it('round-trip a provider through a new cell', () => {
    const source = promptCellSource('echo-native', 'echo-mini');
    expect(source).toBe(
      '%%querymt echo-native:echo-mini\nSay hello to QueryMT in one short sentence.'
    );
    expect(providerOfCell(source)).toBe('echo-native');
  });

  it('writes a bare magic without a provider', () => {
    expect(promptCellSource(null, null, 'hi')).toBe('%%querymt\nhi');
    expect(providerOfCell('%%querymt\nhi')).toBeNull();
    expect(providerOfCell('print(1)')).toBeNull();
  });
});
