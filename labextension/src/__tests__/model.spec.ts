/**
 * QueryMTModel over a fake kernel connection and fake comms: what it sends when it opens, how it
 * reads the kernel's answers, and how it falls back when the kernel has no `querymt` target.
 */
import { Signal } from '@lumino/signaling';
import { describe, expect, it } from 'vitest';

import { kernelSettings, QueryMTModel } from '../model';

class FakeComm {
  opened: unknown = undefined;
  sent: any[] = [];
  closed = false;
  isDisposed = false;
  onMsg: (msg: any) => void = () => undefined;
  onClose: (msg: any) => void = () => undefined;
  constructor(readonly targetName: string) {}
  open(data: unknown) {
    this.opened = data;
  }
  send(data: unknown) {
    this.sent.push(data);
  }
  close() {
    this.closed = true;
  }
  /** The kernel sends a comm_msg. */
  receive(data: unknown) {
    this.onMsg({ content: { data } });
  }
}

class FakeKernel {
  comms: FakeComm[] = [];
  targets = new Map<string, (comm: unknown, msg: unknown) => void>();
  statusChanged = new Signal<any, string>(this);
  isDisposed = false;
  executed: string[] = [];
  executeStatus = 'ok';
  createComm(target: string) {
    const comm = new FakeComm(target);
    this.comms.push(comm);
    return comm;
  }
  registerCommTarget(
    name: string,
    callback: (comm: unknown, msg: unknown) => void
  ) {
    this.targets.set(name, callback);
  }
  removeCommTarget(name: string) {
    this.targets.delete(name);
  }
  requestExecute(content: { code: string }) {
    this.executed.push(content.code);
    return {
      onIOPub: undefined as unknown,
      done: Promise.resolve({ content: { status: this.executeStatus } })
    };
  }
  get lastComm(): FakeComm {
    return this.comms[this.comms.length - 1];
  }
}

const STATE = {
  protocol: 1,
  version: '0.1.0',
  config_path: null,
  default_provider: 'echo-wasm',
  default_model: null,
  output_format: 'markdown',
  stream: true,
  formats: ['markdown'],
  bench_available: false,
  config_available: false,
  providers: []
};

function setup(send = {}, load = true) {
  const kernel = new FakeKernel();
  const model = new QueryMTModel(kernel as any, () => ({ send, load }));
  return { kernel, model };
}

describe('QueryMTModel', () => {
  it('opens the querymt comm with the user settings and the load flag', () => {
    const { kernel, model } = setup({ outputFormat: 'text', stream: false });
    model.connect();
    expect(kernel.lastComm.targetName).toBe('querymt');
    expect(kernel.lastComm.opened).toEqual({
      settings: { output_format: 'text', stream: false },
      load: true
    });
    expect(model.state.status).toBe('connecting');
    model.connect(); // idempotent while a comm is open
    expect(kernel.comms).toHaveLength(1);
  });

  it('becomes ready on the kernel state and reports settings problems', () => {
    const { kernel, model } = setup();
    const seen: string[] = [];
    model.changed.connect((_, state) => seen.push(state.status));
    model.connect();
    kernel.lastComm.receive({
      type: 'state',
      state: STATE,
      problems: ['bad provider']
    });
    expect(model.state.status).toBe('ready');
    expect(model.kernelState?.default_provider).toBe('echo-wasm');
    expect(model.state.message?.text).toContain('bad provider');
    expect(seen).toContain('ready');
  });

  it('shows the load the kernel does when the comm opens as pending until its reply', () => {
    const { kernel, model } = setup();
    model.connect();
    kernel.lastComm.receive({ type: 'state', state: STATE, loading: true });
    expect(model.state.pending).toEqual(['load']);
    kernel.lastComm.receive({
      type: 'reply',
      id: null,
      action: 'load',
      ok: true
    });
    expect(model.state.pending).toEqual([]);
  });

  it('is missing when the kernel closes the comm before answering', () => {
    const { kernel, model } = setup();
    model.connect();
    kernel.lastComm.onClose({});
    expect(model.state.status).toBe('missing');
  });

  it('matches replies to requests by id', async () => {
    const { kernel, model } = setup();
    model.connect();
    const comm = kernel.lastComm;
    comm.receive({ type: 'state', state: STATE });
    const first = model.request('insert', { provider: 'echo-native' });
    const second = model.request('bench', { provider: 'echo-wasm' });
    expect(comm.sent.map(m => m.action)).toEqual(['insert', 'bench']);
    expect(model.state.pending).toEqual(['insert', 'bench']);
    comm.receive({
      type: 'reply',
      id: comm.sent[1].id,
      ok: false,
      message: 'no bench magic'
    });
    comm.receive({
      type: 'reply',
      id: comm.sent[0].id,
      ok: true,
      source: '%%querymt echo-native\nhi'
    });
    expect(await first).toMatchObject({
      ok: true,
      source: '%%querymt echo-native\nhi'
    });
    expect(await second).toMatchObject({
      ok: false,
      message: 'no bench magic'
    });
    expect(model.state.pending).toEqual([]);
    expect(model.state.message?.text).toBe('no bench magic');
  });

  it('answers requests itself when not connected', async () => {
    const { model } = setup();
    const reply = await model.request('reload');
    expect(reply.ok).toBe(false);
    expect(reply.message).toContain('%load_ext querymt_jupyter');
  });

  it('fails pending requests when the comm closes', async () => {
    const { kernel, model } = setup();
    model.connect();
    kernel.lastComm.receive({ type: 'state', state: STATE });
    const pending = model.request('load');
    kernel.lastComm.onClose({});
    expect((await pending).ok).toBe(false);
    expect(model.state.status).toBe('closed');
  });

  it('loads the extension, then connects', async () => {
    const { kernel, model } = setup();
    model.connect();
    kernel.lastComm.onClose({});
    const reply = await model.loadExtension();
    expect(reply.ok).toBe(true);
    expect(kernel.executed).toEqual(['%load_ext querymt_jupyter']);
    expect(kernel.comms).toHaveLength(2);
    expect(model.state.status).toBe('connecting');
  });

  it('connects when the kernel announces the extension', () => {
    const { kernel, model } = setup();
    model.connect();
    kernel.lastComm.onClose({});
    kernel.targets.get('querymt')!({}, {});
    expect(kernel.comms).toHaveLength(2);
    expect(model.state.status).toBe('connecting');
  });

  it('reconnects after a kernel restart', () => {
    const { kernel, model } = setup();
    model.connect();
    kernel.lastComm.receive({ type: 'state', state: STATE });
    kernel.statusChanged.emit('restarting');
    expect(model.state.status).toBe('none');
    kernel.statusChanged.emit('idle');
    expect(kernel.comms).toHaveLength(2);
  });

  it('closes its comm and target when disposed', () => {
    const { kernel, model } = setup();
    model.connect();
    model.dispose();
    expect(kernel.lastComm.closed).toBe(true);
    expect(kernel.targets.has('querymt')).toBe(false);
  });
});

describe('kernelSettings', () => {
  it('sends only the given settings, in the kernel names', () => {
    expect(kernelSettings({})).toEqual({});
    expect(
      kernelSettings({
        defaultProvider: 'openai',
        defaultModel: '',
        outputFormat: 'json',
        stream: true
      })
    ).toEqual({
      default_provider: 'openai',
      default_model: '',
      output_format: 'json',
      stream: true
    });
  });
});
