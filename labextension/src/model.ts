/**
 * `QueryMTModel`: one kernel connection's side of the `querymt` comm (kernel side:
 * `querymt_jupyter/comm.py`). It opens the comm, keeps the last registry state through the pure
 * reducer of `state.ts`, sends requests and matches their replies, and emits `changed`. No DOM.
 */

import { Kernel, KernelMessage } from '@jupyterlab/services';
import { PromiseDelegate, UUID } from '@lumino/coreutils';
import { IDisposable } from '@lumino/disposable';
import { ISignal, Signal } from '@lumino/signaling';

import { Action, IKernelState, INITIAL, IPanelState, reduce } from './state';

export const TARGET = 'querymt';
export const LOAD_EXTENSION = '%load_ext querymt_jupyter';

/** The settings the kernel reads (see `schema/settings.json`); sent with snake_case keys. */
export interface IQueryMTSettings {
  defaultProvider: string;
  defaultModel: string;
  outputFormat: string;
  stream: boolean;
  loadOnConnect: boolean;
}

export const DEFAULT_SETTINGS: IQueryMTSettings = {
  defaultProvider: '',
  defaultModel: '',
  outputFormat: 'markdown',
  stream: true,
  loadOnConnect: true
};

/** The kernel's answer to one request. */
export interface IReply {
  ok: boolean;
  message?: string;
  [key: string]: unknown;
}

/** Settings as the kernel's `apply_settings` reads them; only the given keys. */
export function kernelSettings(settings: Partial<IQueryMTSettings>): {
  [key: string]: string | boolean;
} {
  const out: { [key: string]: string | boolean } = {};
  if (settings.defaultProvider !== undefined) {
    out.default_provider = settings.defaultProvider;
  }
  if (settings.defaultModel !== undefined) {
    out.default_model = settings.defaultModel;
  }
  if (settings.outputFormat !== undefined) {
    out.output_format = settings.outputFormat;
  }
  if (settings.stream !== undefined) {
    out.stream = settings.stream;
  }
  return out;
}

export class QueryMTModel implements IDisposable {
  /**
   * @param kernel - the kernel connection of a notebook or console
   * @param settings - the settings to send when the comm opens (only those the user set)
   */
  constructor(
    readonly kernel: Kernel.IKernelConnection,
    private readonly settings: () => {
      send: Partial<IQueryMTSettings>;
      load: boolean;
    }
  ) {
    kernel.registerCommTarget(TARGET, this._onAnnounce);
    kernel.statusChanged.connect(this._onStatus, this);
  }

  get changed(): ISignal<this, IPanelState> {
    return this._changed;
  }

  get state(): IPanelState {
    return this._state;
  }

  get kernelState(): IKernelState | null {
    return this._state.kernel;
  }

  get isDisposed(): boolean {
    return this._isDisposed;
  }

  /** Open a comm to the kernel's `querymt` target (a no-op while one is open or opening). */
  connect(): void {
    if (this._isDisposed || this._comm) {
      return;
    }
    const comm = this.kernel.createComm(TARGET);
    this._comm = comm;
    this._dispatch({ type: 'connecting' });
    comm.onMsg = msg => this._onMsg(comm, msg);
    comm.onClose = () => this._onClose(comm);
    const { send, load } = this.settings();
    comm.open({ settings: kernelSettings(send), load });
  }

  /** Send a request; resolves with the kernel's reply (`ok: false` when the comm is not open). */
  request(
    action: string,
    args: { [key: string]: unknown } = {}
  ): Promise<IReply> {
    if (!this._comm || this._state.status !== 'ready') {
      return Promise.resolve({
        ok: false,
        message:
          'QueryMT is not loaded in this kernel: run %load_ext querymt_jupyter'
      });
    }
    const id = UUID.uuid4();
    const reply = new PromiseDelegate<IReply>();
    this._replies.set(id, { action, reply });
    this._dispatch({ type: 'request', action });
    this._comm.send({ id, action, ...args } as any);
    return reply.promise;
  }

  /** Run `%load_ext querymt_jupyter` in the kernel, then connect. */
  async loadExtension(): Promise<IReply> {
    this._dispatch({ type: 'request', action: 'load_ext' });
    const future = this.kernel.requestExecute({
      code: LOAD_EXTENSION,
      silent: false,
      store_history: false
    });
    let error = '';
    future.onIOPub = msg => {
      if (msg.header.msg_type === 'error') {
        const content = msg.content as KernelMessage.IErrorMsg['content'];
        error = `${content.ename}: ${content.evalue}`;
      }
    };
    const done = await future.done;
    const ok = done.content.status === 'ok';
    const reply: IReply = ok
      ? { ok }
      : { ok, message: error || `${LOAD_EXTENSION} failed` };
    this._dispatch({
      type: 'reply',
      action: 'load_ext',
      ok,
      message: reply.message
    });
    if (ok) {
      this.connect();
    }
    return reply;
  }

  /** Send settings the user changed; the kernel answers with problems, if any. */
  applySettings(settings: Partial<IQueryMTSettings>): Promise<IReply> {
    return this.request('settings', { settings: kernelSettings(settings) });
  }

  /** Forget the message the panel shows (the user dismissed it). */
  clearMessage(): void {
    this._dispatch({ type: 'message', message: null });
  }

  /** Show a message in the panel (a command's outcome). */
  showMessage(level: 'info' | 'error', text: string): void {
    this._dispatch({ type: 'message', message: { level, text } });
  }

  dispose(): void {
    if (this._isDisposed) {
      return;
    }
    this._isDisposed = true;
    this.kernel.statusChanged.disconnect(this._onStatus, this);
    if (!this.kernel.isDisposed) {
      this.kernel.removeCommTarget(TARGET, this._onAnnounce);
    }
    const comm = this._comm;
    this._comm = null;
    if (comm && !comm.isDisposed && !this.kernel.isDisposed) {
      comm.close();
    }
    this._failPending('the panel was closed');
    Signal.clearData(this);
  }

  /** The kernel loaded the extension (its announcement comm): connect if not connected. */
  private _onAnnounce = (): void => {
    if (this._state.status !== 'ready' && this._state.status !== 'connecting') {
      this._comm = null;
      this.connect();
    }
  };

  private _onMsg(comm: Kernel.IComm, msg: KernelMessage.ICommMsgMsg): void {
    if (comm !== this._comm) {
      return;
    }
    const data = msg.content.data as any;
    if (data?.type === 'state') {
      this._dispatch({ type: 'state', state: data.state as IKernelState });
      if (data.loading) {
        // The kernel loads every provider now; its reply (id null) ends the "loading…".
        this._dispatch({ type: 'request', action: 'load' });
      }
      const problems: string[] = data.problems ?? [];
      if (problems.length) {
        this._dispatch({
          type: 'message',
          message: { level: 'error', text: `settings: ${problems.join('; ')}` }
        });
      }
    } else if (data?.type === 'reply') {
      const waiting = this._replies.get(data.id);
      const action = waiting?.action ?? data.action;
      this._replies.delete(data.id);
      this._dispatch({
        type: 'reply',
        action,
        ok: data.ok,
        message: data.message
      });
      waiting?.reply.resolve(data as IReply);
    }
  }

  private _onClose(comm: Kernel.IComm): void {
    if (comm !== this._comm) {
      return;
    }
    this._comm = null;
    this._failPending('the kernel closed the QueryMT comm');
    this._dispatch({ type: 'closed' });
  }

  private _onStatus(_: Kernel.IKernelConnection, status: Kernel.Status): void {
    if (
      status === 'restarting' ||
      status === 'autorestarting' ||
      status === 'dead'
    ) {
      // A restarted kernel has forgotten its comms and, usually, the extension.
      this._comm = null;
      this._failPending(`the kernel is ${status}`);
      this._dispatch({ type: 'reset' });
      this._restarting = status !== 'dead';
    } else if (status === 'idle' && this._restarting) {
      this._restarting = false;
      this.connect();
    }
  }

  private _failPending(message: string): void {
    for (const { action, reply } of this._replies.values()) {
      reply.resolve({ ok: false, message });
      this._dispatch({ type: 'reply', action, ok: false });
    }
    this._replies.clear();
  }

  private _dispatch(action: Action): void {
    const next = reduce(this._state, action);
    if (next !== this._state) {
      this._state = next;
      this._changed.emit(next);
    }
  }

  private _state: IPanelState = INITIAL;
  private _comm: Kernel.IComm | null = null;
  private _replies = new Map<
    string,
    { action: string; reply: PromiseDelegate<IReply> }
  >();
  private _restarting = false;
  private _isDisposed = false;
  private _changed = new Signal<this, IPanelState>(this);
}
