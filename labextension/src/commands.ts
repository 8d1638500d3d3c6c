/**
 * The QueryMT commands: in the palette, the notebook's context menu (`schema/plugin.json`), the
 * panel's buttons and keyboard shortcuts. Each acts on the notebook or console the panel follows.
 */

import { JupyterFrontEnd } from '@jupyterlab/application';
import { Notification } from '@jupyterlab/apputils';
import { ConsolePanel } from '@jupyterlab/console';
import { NotebookActions, NotebookPanel } from '@jupyterlab/notebook';

import { providerOfCell, promptCellSource } from './magic';
import type { QueryMTPanel, Target } from './panel';

export namespace CommandIDs {
  export const insertPromptCell = 'querymt:insert-prompt-cell';
  export const reload = 'querymt:reload';
  export const openConfig = 'querymt:open-config';
  export const runBench = 'querymt:run-bench';
  export const loadExtension = 'querymt:load-extension';
  export const openPanel = 'querymt:open-panel';
}

/** Put `source` in a new cell below the active one (or the empty active cell); maybe run it. */
export async function insertCell(
  target: Target,
  source: string,
  run: boolean
): Promise<void> {
  if (target instanceof ConsolePanel) {
    const prompt = target.console.promptCell;
    prompt?.model.sharedModel.setSource(source);
    if (run) {
      await target.console.execute(true);
    } else {
      prompt?.editor?.focus();
    }
    return;
  }
  const notebook = target.content;
  const active = notebook.activeCell;
  const reuse =
    active?.model.type === 'code' &&
    active.model.sharedModel.getSource().trim() === '';
  if (!reuse) {
    NotebookActions.insertBelow(notebook);
  }
  if (notebook.activeCell?.model.type !== 'code') {
    NotebookActions.changeCellType(notebook, 'code');
  }
  const cell = notebook.activeCell;
  if (!cell) {
    return;
  }
  cell.model.sharedModel.setSource(source);
  if (run) {
    await NotebookActions.run(notebook, target.sessionContext);
  } else {
    notebook.mode = 'edit';
    const editor = cell.editor;
    if (editor) {
      const lines = source.split('\n');
      editor.setCursorPosition({
        line: lines.length - 1,
        column: lines[lines.length - 1].length
      });
      editor.focus();
    }
  }
}

/** The provider of the active cell when it is a `%%querymt` cell. */
function activeCellProvider(target: Target | null): string | null {
  if (target instanceof NotebookPanel) {
    const source = target.content.activeCell?.model.sharedModel.getSource();
    return source ? providerOfCell(source) : null;
  }
  return null;
}

export function addCommands(app: JupyterFrontEnd, panel: QueryMTPanel): void {
  const { commands, shell } = app;
  const hasTarget = () => panel.target !== null;
  const isReady = () => panel.model?.state.status === 'ready';

  /** Bring the target back to the front (a panel button took the focus) and hand it over. */
  const focusTarget = (): Target | null => {
    const target = panel.target;
    if (target) {
      shell.activateById(target.id);
    }
    return target;
  };

  const fail = (message: string) => {
    panel.model?.showMessage('error', message);
    Notification.warning(message, { autoClose: 6000 });
  };

  commands.addCommand(CommandIDs.insertPromptCell, {
    label: args =>
      args.isContextMenu ? 'Insert prompt cell' : 'QueryMT: insert prompt cell',
    caption: 'Insert a %%querymt cell for a provider below the active cell',
    isEnabled: hasTarget,
    execute: async args => {
      const target = focusTarget();
      if (!target) {
        return;
      }
      const provider = (args.provider as string) || null;
      let source = promptCellSource(provider);
      const model = panel.model;
      if (model && isReady()) {
        const reply = await model.request('insert', { provider });
        if (reply.ok) {
          source = reply.source as string;
        } else {
          fail(reply.message ?? 'cannot insert a prompt cell');
          return;
        }
      }
      await insertCell(target, source, !!args.run);
    }
  });

  commands.addCommand(CommandIDs.reload, {
    label: args =>
      args.isContextMenu ? 'Reload plugins' : 'QueryMT: reload plugins',
    caption: "Re-read the kernel's plugins.toml and reload every provider",
    isEnabled: isReady,
    execute: async () => {
      const reply = await panel.model!.request('reload');
      if (!reply.ok) {
        fail(reply.message ?? 'reload failed');
        return;
      }
      const failed = Object.keys((reply.failed as object) ?? {});
      panel.model?.showMessage(
        failed.length ? 'error' : 'info',
        failed.length
          ? `reloaded; failed: ${failed.join(', ')}`
          : `reloaded ${(reply.loaded as string[]).length} providers`
      );
    }
  });

  commands.addCommand(CommandIDs.openConfig, {
    label: args =>
      args.isContextMenu ? 'Open config' : 'QueryMT: open config',
    caption: 'Open the plugins.toml editor (%querymt config) in a new cell',
    isEnabled: isReady,
    execute: async () => {
      const reply = await panel.model!.request('config');
      const target = focusTarget();
      if (!reply.ok || !target) {
        fail(reply.message ?? 'no notebook to open the config in');
        return;
      }
      await insertCell(target, reply.code as string, true);
    }
  });

  commands.addCommand(CommandIDs.runBench, {
    label: args =>
      args.isContextMenu ? 'Run benchmark' : 'QueryMT: run benchmark',
    caption:
      "Benchmark a provider (%querymt_bench NAME) in a new cell; default: the active cell's provider",
    isEnabled: isReady,
    execute: async args => {
      const provider =
        (args.provider as string) || activeCellProvider(panel.target) || null;
      const reply = await panel.model!.request('bench', { provider });
      const target = focusTarget();
      if (!reply.ok || !target) {
        fail(reply.message ?? 'no notebook to run the benchmark in');
        return;
      }
      await insertCell(target, reply.code as string, true);
    }
  });

  commands.addCommand(CommandIDs.loadExtension, {
    label:
      'QueryMT: load the extension in this kernel (%load_ext querymt_jupyter)',
    isEnabled: () =>
      hasTarget() && !!panel.model && panel.model.state.status !== 'ready',
    execute: async () => {
      const reply = await panel.model?.loadExtension();
      if (reply && !reply.ok) {
        fail(reply.message ?? '%load_ext querymt_jupyter failed');
      }
    }
  });

  commands.addCommand(CommandIDs.openPanel, {
    label: 'QueryMT: show the plugins panel',
    execute: () => shell.activateById(panel.id)
  });

  // Buttons disable themselves from the model's state; menus and the palette ask again.
  panel.changed.connect(() => commands.notifyCommandChanged());
}

/** The commands listed in the palette, in order. */
export const PALETTE_COMMANDS = [
  CommandIDs.insertPromptCell,
  CommandIDs.reload,
  CommandIDs.openConfig,
  CommandIDs.runBench,
  CommandIDs.loadExtension,
  CommandIDs.openPanel
];
