/**
 * The plugins of querymt-jupyter's JupyterLab extension:
 *
 * - `querymt-jupyter:plugin`    the side panel and the commands (menus, shortcuts: schema/plugin.json)
 * - `querymt-jupyter:settings`  defaults the kernel reads (schema/settings.json), sent over the comm
 * - `querymt-jupyter:highlight` `%%querymt` cells highlighted as Markdown prompts, in every editor
 */

import {
  ILabShell,
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';
import {
  EditorExtensionRegistry,
  IEditorExtensionRegistry
} from '@jupyterlab/codemirror';
import { ConsolePanel, IConsoleTracker } from '@jupyterlab/console';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { Token } from '@lumino/coreutils';
import { Widget } from '@lumino/widgets';

import { addCommands, PALETTE_COMMANDS } from './commands';
import { queryMTHighlight } from './highlight';
import { DEFAULT_SETTINGS, IQueryMTSettings } from './model';
import { QueryMTPanel } from './panel';
import { queryMTIcon } from './widget';

const PLUGIN_ID = 'querymt-jupyter:plugin';
const SETTINGS_ID = 'querymt-jupyter:settings';
const HIGHLIGHT_ID = 'querymt-jupyter:highlight';

/** The side panel, for plugins that need it (the settings plugin). */
export const IQueryMTPanel = new Token<QueryMTPanel>(
  'querymt-jupyter:IQueryMTPanel',
  'The QueryMT plugins side panel'
);

/**
 * @param app - the application
 * @param notebooks - the notebooks, to follow the active one
 * @param labShell - the shell, for the active main-area widget
 * @param consoles - the consoles (optional), followed like notebooks
 * @param palette - the command palette (optional)
 * @param restorer - restores the panel's place across reloads (optional)
 */
function activatePanel(
  app: JupyterFrontEnd,
  notebooks: INotebookTracker,
  labShell: ILabShell,
  consoles: IConsoleTracker | null,
  palette: ICommandPalette | null,
  restorer: ILayoutRestorer | null
): QueryMTPanel {
  const panel = new QueryMTPanel(app.commands);
  panel.title.icon = queryMTIcon;
  app.shell.add(panel, 'left', { rank: 650 });
  restorer?.add(panel, panel.id);

  const follow = (widget: Widget | null) => {
    if (widget instanceof NotebookPanel || widget instanceof ConsolePanel) {
      panel.setTarget(widget);
    } else if (!panel.target || panel.target.isDisposed) {
      panel.setTarget(
        notebooks.currentWidget ?? consoles?.currentWidget ?? null
      );
    }
  };
  labShell.currentChanged.connect((_, args) => follow(args.newValue));
  notebooks.widgetAdded.connect((_, widget) => {
    if (labShell.currentWidget === widget) {
      follow(widget);
    }
  });
  follow(labShell.currentWidget);

  addCommands(app, panel);
  for (const command of PALETTE_COMMANDS) {
    palette?.addItem({ command, category: 'QueryMT' });
  }
  return panel;
}

const panelPlugin: JupyterFrontEndPlugin<QueryMTPanel> = {
  id: PLUGIN_ID,
  description:
    'A side panel listing the kernel-resident QueryMT plugins, and the QueryMT commands.',
  autoStart: true,
  requires: [INotebookTracker, ILabShell],
  optional: [IConsoleTracker, ICommandPalette, ILayoutRestorer],
  provides: IQueryMTPanel,
  activate: activatePanel
};

/**
 * @param app - the application
 * @param panel - the side panel, which forwards the settings to the kernels
 * @param registry - the settings registry
 */
async function activateSettings(
  app: JupyterFrontEnd,
  panel: QueryMTPanel,
  registry: ISettingRegistry
): Promise<void> {
  void app;
  const read = (settings: ISettingRegistry.ISettings) => {
    const composite = {
      ...DEFAULT_SETTINGS,
      ...(settings.composite as unknown as Partial<IQueryMTSettings>)
    };
    const user = { ...(settings.user as unknown as Partial<IQueryMTSettings>) };
    delete user.loadOnConnect;
    panel.setSettings(composite, user);
  };
  try {
    const settings = await registry.load(SETTINGS_ID);
    read(settings);
    settings.changed.connect(read);
  } catch (reason) {
    console.error(
      `QueryMT: cannot read the settings of ${SETTINGS_ID}`,
      reason
    );
  }
}

const settingsPlugin: JupyterFrontEndPlugin<void> = {
  id: SETTINGS_ID,
  description:
    'Default provider and model, output format and streaming, sent to each kernel.',
  autoStart: true,
  requires: [IQueryMTPanel, ISettingRegistry],
  activate: activateSettings
};

/**
 * @param app - the application
 * @param extensions - the editor extension registry every cell and console editor is built from
 */
function activateHighlight(
  app: JupyterFrontEnd,
  extensions: IEditorExtensionRegistry
): void {
  void app;
  extensions.addExtension({
    name: HIGHLIGHT_ID,
    factory: () =>
      EditorExtensionRegistry.createImmutableExtension(queryMTHighlight())
  });
}

const highlightPlugin: JupyterFrontEndPlugin<void> = {
  id: HIGHLIGHT_ID,
  description: '%%querymt cells highlighted as Markdown prompts.',
  autoStart: true,
  requires: [IEditorExtensionRegistry],
  activate: activateHighlight
};

export default [panelPlugin, settingsPlugin, highlightPlugin];
