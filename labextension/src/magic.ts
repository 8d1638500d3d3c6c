/**
 * The `%%querymt` magic line, read the way the kernel reads it (shell words), with no JupyterLab
 * import: the highlighter, the commands and the unit tests share it.
 *
 *     %%querymt echo-wasm:echo-1 -p temperature=0.2 --chat notes -o reply
 *     Summarise {df} in one sentence.
 */

export const MAGIC = '%%querymt';

/** Options of `%%querymt` that take a value (the others are flags). */
const VALUE_OPTIONS = new Set([
  '-f',
  '--format',
  '-o',
  '--output',
  '-p',
  '--param',
  '--system',
  '--chat'
]);

export type MagicTokenKind = 'magic' | 'target' | 'option' | 'value' | 'word';

/** A token of the magic line: offsets into the line, end exclusive. */
export interface IMagicToken {
  from: number;
  to: number;
  kind: MagicTokenKind;
  text: string;
}

/** A parsed magic line. */
export interface IMagicLine {
  provider: string | null;
  model: string | null;
  options: { [name: string]: string | true };
  tokens: IMagicToken[];
}

/** Whether a line is a `%%querymt` magic line (`%%querymt` alone or followed by blanks). */
export function isMagicLine(line: string): boolean {
  return (
    line.startsWith(MAGIC) &&
    (line.length === MAGIC.length || /\s/.test(line[MAGIC.length]))
  );
}

/** Whether a cell's source is a `%%querymt` prompt (the magic must be its first line). */
export function isPromptCell(source: string): boolean {
  const end = source.indexOf('\n');
  return isMagicLine(end < 0 ? source : source.slice(0, end));
}

/** Split a line into shell words with their offsets; quotes group words and stay in the token. */
export function shellWords(
  line: string
): { from: number; to: number; text: string }[] {
  const words: { from: number; to: number; text: string }[] = [];
  let i = 0;
  while (i < line.length) {
    while (i < line.length && /\s/.test(line[i])) {
      i++;
    }
    if (i >= line.length) {
      break;
    }
    const from = i;
    let text = '';
    while (i < line.length && !/\s/.test(line[i])) {
      const quote = line[i];
      if (quote === '"' || quote === "'") {
        const close = line.indexOf(quote, i + 1);
        const end = close < 0 ? line.length : close;
        text += line.slice(i + 1, end);
        i = close < 0 ? line.length : close + 1;
      } else {
        text += quote;
        i++;
      }
    }
    words.push({ from, to: i, text });
  }
  return words;
}

/** Tokens of a magic line for highlighting: the magic, the target, options and their values. */
export function tokenizeMagicLine(line: string): IMagicToken[] {
  if (!isMagicLine(line)) {
    return [];
  }
  const tokens: IMagicToken[] = [
    { from: 0, to: MAGIC.length, kind: 'magic', text: MAGIC }
  ];
  const words = shellWords(line.slice(MAGIC.length)).map(w => ({
    ...w,
    from: w.from + MAGIC.length,
    to: w.to + MAGIC.length
  }));
  let expectValue = false;
  let haveTarget = false;
  for (const word of words) {
    let kind: MagicTokenKind;
    if (expectValue) {
      kind = 'value';
      expectValue = false;
    } else if (word.text.startsWith('-') && word.text.length > 1) {
      kind = 'option';
      const [name] = word.text.split('=', 1);
      expectValue = VALUE_OPTIONS.has(name) && !word.text.includes('=');
    } else if (!haveTarget) {
      kind = 'target';
      haveTarget = true;
    } else {
      kind = 'word';
    }
    tokens.push({ ...word, kind });
  }
  return tokens;
}

/** The provider, model and options of a magic line; null when the line is not one. */
export function parseMagicLine(line: string): IMagicLine | null {
  if (!isMagicLine(line)) {
    return null;
  }
  const tokens = tokenizeMagicLine(line);
  const parsed: IMagicLine = {
    provider: null,
    model: null,
    options: {},
    tokens
  };
  for (let i = 1; i < tokens.length; i++) {
    const token = tokens[i];
    if (token.kind === 'target') {
      const colon = token.text.indexOf(':');
      parsed.provider =
        (colon < 0 ? token.text : token.text.slice(0, colon)) || null;
      parsed.model = colon < 0 ? null : token.text.slice(colon + 1) || null;
    } else if (token.kind === 'option') {
      const eq = token.text.indexOf('=');
      if (eq > 0) {
        parsed.options[token.text.slice(0, eq)] = token.text.slice(eq + 1);
      } else if (tokens[i + 1]?.kind === 'value') {
        parsed.options[token.text] = tokens[i + 1].text;
        i++;
      } else {
        parsed.options[token.text] = true;
      }
    }
  }
  return parsed;
}

/** The provider a prompt cell names, or null (no magic, or the kernel's default). */
export function providerOfCell(source: string): string | null {
  const end = source.indexOf('\n');
  return (
    parseMagicLine(end < 0 ? source : source.slice(0, end))?.provider ?? null
  );
}

/** The source of a new prompt cell, when the kernel cannot be asked for one. */
export function promptCellSource(
  provider?: string | null,
  model?: string | null,
  prompt = 'Say hello to QueryMT in one short sentence.'
): string {
  const target = provider ? ` ${provider}${model ? ':' + model : ''}` : '';
  return `${MAGIC}${target}\n${prompt}`;
}
