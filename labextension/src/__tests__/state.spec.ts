import { describe, expect, it } from 'vitest';

import {
  defaultsLabel,
  hostsLabel,
  IKernelState,
  INITIAL,
  IProvider,
  reduce,
  statusLabel,
  summary,
  typeLabel
} from '../state';

const provider = (over: Partial<IProvider> = {}): IProvider => ({
  name: 'echo-wasm',
  type: 'wasm',
  generation: 'B',
  source: {
    scheme: 'bundled',
    location: 'echo.wasm',
    display: 'bundled:echo.wasm',
    digest: null,
    layer_digest: null
  },
  status: 'loaded',
  error: null,
  allowed_hosts: [],
  operations: ['chat', 'chat_stream'],
  ...over
});

const kernel = (providers: IProvider[] = [provider()]): IKernelState => ({
  protocol: 1,
  version: '0.1.0',
  config_path: '/x/plugins.toml',
  default_provider: 'echo-wasm',
  default_model: null,
  output_format: 'markdown',
  stream: true,
  formats: ['markdown', 'text', 'code', 'json', 'html'],
  bench_available: false,
  config_available: true,
  providers
});

describe('reduce', () => {
  it('goes connecting -> ready on the first state', () => {
    const connecting = reduce(INITIAL, { type: 'connecting' });
    expect(connecting.status).toBe('connecting');
    const ready = reduce(connecting, { type: 'state', state: kernel() });
    expect(ready.status).toBe('ready');
    expect(ready.kernel?.providers[0].name).toBe('echo-wasm');
  });

  it('reads a close before any state as a kernel without the target', () => {
    const state = reduce(reduce(INITIAL, { type: 'connecting' }), {
      type: 'closed'
    });
    expect(state.status).toBe('missing');
  });

  it('reads a close after the state as closed, keeping the last state', () => {
    let state = reduce(INITIAL, { type: 'connecting' });
    state = reduce(state, { type: 'state', state: kernel() });
    state = reduce(state, { type: 'request', action: 'reload' });
    state = reduce(state, { type: 'closed' });
    expect(state.status).toBe('closed');
    expect(state.pending).toEqual([]);
    expect(state.kernel).not.toBeNull();
  });

  it('tracks pending requests and shows a failed reply as an error', () => {
    let state = reduce(INITIAL, { type: 'state', state: kernel() });
    state = reduce(state, { type: 'request', action: 'bench' });
    state = reduce(state, { type: 'request', action: 'bench' });
    expect(state.pending).toEqual(['bench', 'bench']);
    state = reduce(state, {
      type: 'reply',
      action: 'bench',
      ok: false,
      message: 'no bench'
    });
    expect(state.pending).toEqual(['bench']);
    expect(state.message).toEqual({ level: 'error', text: 'no bench' });
    state = reduce(state, { type: 'reply', action: 'bench', ok: true });
    expect(state.pending).toEqual([]);
    expect(state.message?.text).toBe('no bench');
  });

  it('clears the message on a new request and on reset', () => {
    let state = reduce(INITIAL, {
      type: 'message',
      message: { level: 'info', text: 'x' }
    });
    expect(
      reduce(state, { type: 'request', action: 'load' }).message
    ).toBeNull();
    state = reduce(state, { type: 'reset' });
    expect(state).toEqual(INITIAL);
  });

  it('never mutates its input', () => {
    const before = JSON.stringify(INITIAL);
    reduce(INITIAL, { type: 'request', action: 'load' });
    reduce(INITIAL, { type: 'state', state: kernel() });
    expect(JSON.stringify(INITIAL)).toBe(before);
  });
});

describe('labels', () => {
  it('say what a person reads', () => {
    expect(statusLabel(provider({ status: 'not-loaded' }))).toBe('not loaded');
    expect(hostsLabel(provider({ allowed_hosts: null }))).toBe(
      'known once loaded'
    );
    expect(hostsLabel(provider({ allowed_hosts: [] }))).toBe(
      'any host (unrestricted)'
    );
    expect(hostsLabel(provider({ allowed_hosts: ['a', 'b'] }))).toBe('a, b');
    expect(typeLabel('wasm')).toBe('Wasm');
    expect(typeLabel('native')).toBe('native');
    expect(typeLabel('oci')).toBe('OCI');
  });

  it('summarise the kernel', () => {
    const k = kernel([
      provider(),
      provider({ name: 'bad', status: 'error', error: 'x' })
    ]);
    expect(summary(k)).toBe('2 providers, 1 loaded, 1 failed');
    expect(
      defaultsLabel({ ...k, default_model: 'echo-1', stream: false })
    ).toBe('echo-wasm:echo-1 · markdown · not streaming');
  });
});
