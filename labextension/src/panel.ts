/**
 * `QueryMTPanel`: the side panel. It follows the active notebook or console, keeps one
 * `QueryMTModel` per kernel connection (so switching back and forth does not reconnect, and several
 * notebooks on several kernels each keep their state), forwards settings to every connected kernel,
 * and hosts the React view. It owns the models and disposes them with their kernels.
 */

import { ISessionContext } from '@jupyterlab/apputils';
import { ConsolePanel } from '@jupyterlab/console';
import { NotebookPanel } from '@jupyterlab/notebook';
import { Kernel } from '@jupyterlab/services';
import { CommandRegistry } from '@lumino/commands';
import { ISignal, Signal } from '@lumino/signaling';
import { Panel } from '@lumino/widgets';

import { DEFAULT_SETTINGS, IQueryMTSettings, QueryMTModel } from './model';
import { QueryMTView } from './widget';

/** What the panel can follow: a notebook or a console (both have a session context). */
export type Target = NotebookPanel | ConsolePanel;

export const PANEL_ID = 'jp-QueryMT-panel';

export class QueryMTPanel extends Panel {
  constructor(commands: CommandRegistry) {
    super();
    this.id = PANEL_ID;
    this.addClass('jp-QueryMT-panel');
    this.title.caption = 'QueryMT plugins';
    this._view = new QueryMTView(this, commands);
    this.addWidget(this._view);
  }

  /** Emitted when the target, its kernel, or the target's model state changes. */
  get changed(): ISignal<this, void> {
    return this._changed;
  }

  /** The notebook or console the panel shows the kernel of. */
  get target(): Target | null {
    return this._target;
  }

  /** The model of the target's kernel, if it has one. */
  get model(): QueryMTModel | null {
    return this._target ? this.modelFor(this._target) : null;
  }

  get settings(): IQueryMTSettings {
    return this._settings;
  }

  /** Follow another notebook or console (null: none is active). */
  setTarget(target: Target | null): void {
    if (target === this._target) {
      return;
    }
    if (this._target) {
      this._target.sessionContext.kernelChanged.disconnect(
        this._onKernel,
        this
      );
    }
    this._target = target;
    if (target) {
      target.sessionContext.kernelChanged.connect(this._onKernel, this);
      target.disposed.connect(this._onTargetDisposed, this);
      void this._connectWhenReady(target.sessionContext);
    }
    this._follow();
  }

  /** The model of a target's current kernel (created on first use); null without a kernel. */
  modelFor(target: Target): QueryMTModel | null {
    const kernel = target.sessionContext.session?.kernel ?? null;
    return kernel ? this._ensure(kernel) : null;
  }

  /**
   * New settings: `user` holds what the user set explicitly (sent when a comm opens, so an
   * unchanged default never overrides `%querymt default` run in the kernel); changed values are
   * sent to every connected kernel at once.
   */
  setSettings(
    composite: IQueryMTSettings,
    user: Partial<IQueryMTSettings>
  ): void {
    const old = this._settings;
    this._settings = composite;
    this._userSettings = user;
    const changed: Partial<IQueryMTSettings> = {};
    for (const key of Object.keys(composite) as (keyof IQueryMTSettings)[]) {
      if (composite[key] !== old[key] && key !== 'loadOnConnect') {
        (changed as any)[key] = composite[key];
      }
    }
    // Kernels that connected before the settings were read get the user's settings now.
    const send = this._settingsLoaded ? changed : user;
    this._settingsLoaded = true;
    if (!Object.keys(send).length) {
      return;
    }
    for (const model of this._models.values()) {
      if (model.state.status === 'ready') {
        void model.applySettings(send);
      }
    }
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    for (const model of this._models.values()) {
      model.dispose();
    }
    this._models.clear();
    super.dispose();
  }

  private async _connectWhenReady(context: ISessionContext): Promise<void> {
    await context.ready;
    if (this._target?.sessionContext === context) {
      const model = this.model;
      if (model && model.state.status === 'none') {
        model.connect();
      }
      this._follow();
    }
  }

  private _ensure(kernel: Kernel.IKernelConnection): QueryMTModel {
    let model = this._models.get(kernel);
    if (!model) {
      const created = new QueryMTModel(kernel, () => ({
        send: this._userSettings,
        load: this._settings.loadOnConnect
      }));
      this._models.set(kernel, created);
      created.changed.connect(this._onModelChanged, this);
      kernel.disposed.connect(() => {
        this._models.delete(kernel);
        created.dispose();
        this._changed.emit();
      });
      model = created;
    }
    return model;
  }

  private _onKernel(): void {
    if (this._target) {
      void this._connectWhenReady(this._target.sessionContext);
    }
    this._follow();
  }

  private _onTargetDisposed(target: Target): void {
    if (target === this._target) {
      this.setTarget(null);
    }
  }

  private _onModelChanged(model: QueryMTModel): void {
    if (model === this.model) {
      this._changed.emit();
    }
  }

  private _follow(): void {
    this._changed.emit();
  }

  private _target: Target | null = null;
  private _models = new Map<Kernel.IKernelConnection, QueryMTModel>();
  private _settings: IQueryMTSettings = { ...DEFAULT_SETTINGS };
  private _userSettings: Partial<IQueryMTSettings> = {};
  private _settingsLoaded = false;
  private _view: QueryMTView;
  private _changed = new Signal<this, void>(this);
}
