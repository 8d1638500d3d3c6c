/**
 * What the panel shows for one kernel, as a pure reducer over the events of its comm: no JupyterLab
 * import, so the unit tests drive it directly. The kernel's side of the wire is
 * `querymt_jupyter/comm.py`.
 */

/** One provider of the kernel's registry, as `comm.py` sends it. */
export interface IProvider {
  name: string;
  /** `native`, `wasm`, or `oci` while an OCI plugin's kind is not known yet. */
  type: string;
  generation: string | null;
  source: {
    scheme: string;
    location: string;
    display: string;
    /** What an OCI reference resolved to (or pins), when known. */
    digest: string | null;
    /** The plugin file's own digest, for files from the OCI cache. */
    layer_digest: string | null;
  };
  status: 'loaded' | 'error' | 'not-loaded';
  error: string | null;
  /** Empty: unrestricted; null: known once loaded. */
  allowed_hosts: string[] | null;
  operations: string[];
}

/** The kernel's registry and session defaults. */
export interface IKernelState {
  protocol: number;
  version: string;
  config_path: string | null;
  default_provider: string;
  default_model: string | null;
  output_format: string;
  stream: boolean;
  formats: string[];
  bench_available: boolean;
  config_available: boolean;
  providers: IProvider[];
}

/**
 * - `none`: no notebook or console is active, or it has no kernel
 * - `connecting`: a comm was opened, no answer yet
 * - `missing`: the kernel has no `querymt` comm target (`%load_ext querymt_jupyter` not run)
 * - `ready`: connected, `kernel` holds the last state
 * - `closed`: the comm closed after it was ready (kernel restarted or shut down)
 */
export type Status = 'none' | 'connecting' | 'missing' | 'ready' | 'closed';

export interface IMessage {
  level: 'info' | 'error';
  text: string;
}

export interface IPanelState {
  status: Status;
  kernel: IKernelState | null;
  /** Actions sent and not answered yet (buttons show busy while their action is pending). */
  pending: string[];
  message: IMessage | null;
}

export type Action =
  | { type: 'reset' }
  | { type: 'connecting' }
  | { type: 'closed' }
  | { type: 'state'; state: IKernelState }
  | { type: 'request'; action: string }
  | { type: 'reply'; action: string; ok: boolean; message?: string }
  | { type: 'message'; message: IMessage | null };

export const INITIAL: IPanelState = {
  status: 'none',
  kernel: null,
  pending: [],
  message: null
};

function withoutOne(list: string[], item: string): string[] {
  const i = list.indexOf(item);
  return i < 0 ? list : [...list.slice(0, i), ...list.slice(i + 1)];
}

export function reduce(state: IPanelState, action: Action): IPanelState {
  switch (action.type) {
    case 'reset':
      return INITIAL;
    case 'connecting':
      return { ...INITIAL, status: 'connecting', kernel: state.kernel };
    case 'closed':
      // Closed before any state arrived: the kernel has no such target (it closes unknown comms).
      return {
        ...state,
        status: state.status === 'connecting' ? 'missing' : 'closed',
        pending: []
      };
    case 'state':
      return { ...state, status: 'ready', kernel: action.state };
    case 'request':
      return {
        ...state,
        pending: [...state.pending, action.action],
        message: null
      };
    case 'reply':
      return {
        ...state,
        pending: withoutOne(state.pending, action.action),
        message:
          action.ok || !action.message
            ? state.message
            : { level: 'error', text: action.message }
      };
    case 'message':
      return { ...state, message: action.message };
  }
}

/** "loaded", "failed", "not loaded": the status as a person reads it. */
export function statusLabel(provider: IProvider): string {
  return provider.status === 'not-loaded' ? 'not loaded' : provider.status;
}

/** The allow-list as a person reads it. */
export function hostsLabel(provider: IProvider): string {
  if (provider.allowed_hosts === null) {
    return 'known once loaded';
  }
  return provider.allowed_hosts.length
    ? provider.allowed_hosts.join(', ')
    : 'any host (unrestricted)';
}

/** `native`, `Wasm`, `OCI`. */
export function typeLabel(type: string): string {
  return type === 'wasm' ? 'Wasm' : type === 'oci' ? 'OCI' : type;
}

/** The kernel's defaults on one line: `echo-wasm:echo-1 · markdown · streaming`. */
export function defaultsLabel(kernel: IKernelState): string {
  const target = kernel.default_model
    ? `${kernel.default_provider}:${kernel.default_model}`
    : kernel.default_provider;
  return `${target} · ${kernel.output_format} · ${kernel.stream ? 'streaming' : 'not streaming'}`;
}

/** Count of providers per status, for the panel's summary line. */
export function summary(kernel: IKernelState): string {
  const loaded = kernel.providers.filter(p => p.status === 'loaded').length;
  const failed = kernel.providers.filter(p => p.status === 'error').length;
  const parts = [`${kernel.providers.length} providers`, `${loaded} loaded`];
  if (failed) {
    parts.push(`${failed} failed`);
  }
  return parts.join(', ');
}
