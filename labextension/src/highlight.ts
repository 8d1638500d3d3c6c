/**
 * `%%querymt` cells read as Markdown prompts: a CodeMirror 6 extension, added to every editor
 * (notebook cells and console prompts alike) through JupyterLab's editor extension registry.
 *
 * While an editor's first line is a `%%querymt` magic line, a higher-precedence language replaces
 * the kernel's (Python): Markdown, with one extra block node for the magic line whose tokens (the
 * magic, the target, options, values) carry their own highlight tags, plus a line class and an
 * editor class for the CSS. Editing the first line switches it on and off.
 */

import {
  defineLanguageFacet,
  Language,
  languageDataProp
} from '@codemirror/language';
import {
  Compartment,
  EditorState,
  Extension,
  Prec,
  Text
} from '@codemirror/state';
import {
  Decoration,
  DecorationSet,
  EditorView,
  ViewPlugin,
  ViewUpdate
} from '@codemirror/view';
import { tags } from '@lezer/highlight';
import { GFM, MarkdownConfig, parser as baseParser } from '@lezer/markdown';

import { isMagicLine, MagicTokenKind, tokenizeMagicLine } from './magic';

/** The syntax node of each token kind of the magic line. */
export const TOKEN_NODES: { [kind in MagicTokenKind]: string } = {
  magic: 'QueryMTMagicKeyword',
  target: 'QueryMTTarget',
  option: 'QueryMTOption',
  value: 'QueryMTValue',
  word: 'QueryMTWord'
};

/** The magic line as a Markdown block (only as the document's first line). */
export const queryMTMagicLine: MarkdownConfig = {
  defineNodes: [
    { name: 'QueryMTMagic', block: true, style: tags.meta },
    { name: TOKEN_NODES.magic, style: tags.keyword },
    { name: TOKEN_NODES.target, style: tags.definition(tags.variableName) },
    { name: TOKEN_NODES.option, style: tags.attributeName },
    { name: TOKEN_NODES.value, style: tags.string },
    { name: TOKEN_NODES.word, style: tags.invalid }
  ],
  parseBlock: [
    {
      name: 'QueryMTMagic',
      before: 'FencedCode',
      parse(cx, line) {
        if (cx.lineStart !== 0 || !isMagicLine(line.text)) {
          return false;
        }
        const start = cx.lineStart;
        const children = tokenizeMagicLine(line.text).map(token =>
          cx.elt(TOKEN_NODES[token.kind], start + token.from, start + token.to)
        );
        cx.addElement(
          cx.elt('QueryMTMagic', start, start + line.text.length, children)
        );
        cx.nextLine();
        return true;
      }
    }
  ]
};

const languageData = defineLanguageFacet({
  commentTokens: { block: { open: '<!--', close: '-->' } }
});

/** Markdown (GitHub flavour) whose first line may be a `%%querymt` magic line. */
export const promptParser = baseParser.configure([
  GFM,
  queryMTMagicLine,
  { props: [languageDataProp.add({ Document: languageData })] }
]);

export const promptLanguage = new Language(
  languageData,
  promptParser,
  [],
  'querymt-prompt'
);

/** Whether a document is a prompt cell: its first line is the magic line. */
export function isPromptDoc(doc: Text): boolean {
  return isMagicLine(doc.line(1).text);
}

const magicLine = Decoration.line({ class: 'jp-QueryMT-magicLine' });

const magicLineClass = ViewPlugin.fromClass(
  class {
    decorations: DecorationSet;
    constructor(view: EditorView) {
      this.decorations = Decoration.set([magicLine.range(0)]);
      void view;
    }
    update(_update: ViewUpdate): void {
      // The first line always starts at 0: the one decoration never moves.
    }
  },
  { decorations: plugin => plugin.decorations }
);

const promptMode: Extension = [
  Prec.highest(promptLanguage.extension),
  magicLineClass,
  EditorView.editorAttributes.of({ class: 'jp-QueryMT-prompt' })
];

const mode = new Compartment();

/** Switch the prompt mode on or off as the first line changes. */
const followFirstLine = EditorState.transactionExtender.of(tr => {
  if (!tr.docChanged) {
    return null;
  }
  const want = isPromptDoc(tr.newDoc);
  const has = mode.get(tr.startState) === promptMode;
  return want === has
    ? null
    : { effects: mode.reconfigure(want ? promptMode : []) };
});

/** An editor created with a prompt already in it (a notebook being opened) starts in prompt mode. */
const initialMode = ViewPlugin.fromClass(
  class {
    constructor(view: EditorView) {
      if (isPromptDoc(view.state.doc) && mode.get(view.state) !== promptMode) {
        // No dispatch while the view is being built: do it right after.
        void Promise.resolve().then(() => {
          if (
            isPromptDoc(view.state.doc) &&
            mode.get(view.state) !== promptMode
          ) {
            view.dispatch({ effects: mode.reconfigure(promptMode) });
          }
        });
      }
    }
  }
);

/** The extension: add it to every editor. */
export function queryMTHighlight(): Extension {
  return [mode.of([]), followFirstLine, initialMode];
}
