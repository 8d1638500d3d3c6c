/**
 * The side panel's view: renders the panel's target and its model's state, and turns clicks into
 * commands (so a button and the palette do the same thing). No kernel access of its own.
 */

import {
  LabIcon,
  ReactWidget,
  refreshIcon,
  settingsIcon,
  UseSignal
} from '@jupyterlab/ui-components';
import { CommandRegistry } from '@lumino/commands';
import * as React from 'react';

import { CommandIDs } from './commands';
import type { QueryMTPanel } from './panel';
import {
  defaultsLabel,
  hostsLabel,
  INITIAL,
  IKernelState,
  IPanelState,
  IProvider,
  statusLabel,
  summary,
  typeLabel
} from './state';

const ICON_SVG = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
  <g class="jp-icon3" fill="#616161">
    <path d="M11 2a8.5 8.5 0 0 0 0 17c1.7 0 3.3-.5 4.6-1.4l3.7 3.7 1.4-1.4-3.6-3.6A8.5 8.5 0 0 0 11 2zm0 2.2a6.3 6.3 0 1 1 0 12.6 6.3 6.3 0 0 1 0-12.6z"/>
    <circle cx="8.3" cy="10.5" r="1.4"/><circle cx="13.7" cy="10.5" r="1.4"/>
  </g>
</svg>`;

export const queryMTIcon = new LabIcon({
  name: 'querymt-jupyter:icon',
  svgstr: ICON_SVG
});

export class QueryMTView extends ReactWidget {
  constructor(
    private readonly panel: QueryMTPanel,
    private readonly commands: CommandRegistry
  ) {
    super();
    this.addClass('jp-QueryMT-view');
  }

  render(): JSX.Element {
    return (
      <UseSignal signal={this.panel.changed}>
        {() => <PanelBody panel={this.panel} commands={this.commands} />}
      </UseSignal>
    );
  }
}

interface IBodyProps {
  panel: QueryMTPanel;
  commands: CommandRegistry;
}

function PanelBody({ panel, commands }: IBodyProps): JSX.Element {
  const target = panel.target;
  const model = panel.model;
  const state: IPanelState = model?.state ?? INITIAL;
  const run = (id: string, args: { [key: string]: any } = {}) =>
    void commands.execute(id, args);
  const busy = (action: string) => state.pending.includes(action);
  const ready = state.status === 'ready';

  return (
    <div className="jp-QueryMT-body" data-status={state.status}>
      <div className="jp-QueryMT-header">
        <span className="jp-QueryMT-title">QueryMT plugins</span>
        <span className="jp-QueryMT-toolbar">
          <button
            className="jp-QueryMT-iconButton"
            title="Reload plugins (re-read the config, reload every provider)"
            data-action="reload"
            disabled={!ready || busy('reload')}
            onClick={() => run(CommandIDs.reload)}
          >
            <refreshIcon.react tag="span" />
          </button>
          <button
            className="jp-QueryMT-iconButton"
            title="Open the config editor in a cell (%querymt config)"
            data-action="config"
            disabled={!ready}
            onClick={() => run(CommandIDs.openConfig)}
          >
            <settingsIcon.react tag="span" />
          </button>
        </span>
      </div>
      <div className="jp-QueryMT-target">
        {target
          ? `${target.title.label} · ${target.sessionContext.kernelDisplayName}`
          : 'No notebook or console is active'}
      </div>
      {state.message && (
        <div
          className={`jp-QueryMT-message jp-mod-${state.message.level}`}
          role="alert"
        >
          <span>{state.message.text}</span>
          <button
            className="jp-QueryMT-dismiss"
            title="Dismiss"
            onClick={() => model?.clearMessage()}
          >
            ×
          </button>
        </div>
      )}
      <Status
        state={state}
        hasTarget={!!target}
        hasKernel={!!target && !target.sessionContext.hasNoKernel}
        run={run}
        busy={busy}
      />
      {state.kernel && ready && (
        <Providers kernel={state.kernel} run={run} busy={busy} />
      )}
    </div>
  );
}

interface IStatusProps {
  state: IPanelState;
  hasTarget: boolean;
  hasKernel: boolean;
  run: (id: string, args?: { [key: string]: any }) => void;
  busy: (action: string) => boolean;
}

function Status({
  state,
  hasTarget,
  hasKernel,
  run,
  busy
}: IStatusProps): JSX.Element | null {
  if (!hasTarget) {
    return (
      <p className="jp-QueryMT-note">
        Open a notebook or a console to see its kernel's QueryMT plugins.
      </p>
    );
  }
  switch (state.status) {
    case 'none':
      return (
        <p className="jp-QueryMT-note">
          {hasKernel
            ? 'Waiting for the kernel…'
            : 'No kernel: select one to use QueryMT.'}
        </p>
      );
    case 'connecting':
      return <p className="jp-QueryMT-note">Connecting to the kernel…</p>;
    case 'missing':
    case 'closed':
      return (
        <div className="jp-QueryMT-missing">
          <p>
            {state.status === 'missing'
              ? 'QueryMT is not loaded in this kernel. Run'
              : 'The kernel closed the connection. Load QueryMT again with'}{' '}
            <code>%load_ext querymt_jupyter</code>
          </p>
          <button
            className="jp-Button jp-mod-styled jp-mod-accept"
            data-action="load-extension"
            disabled={busy('load_ext')}
            onClick={() => run(CommandIDs.loadExtension)}
          >
            {busy('load_ext') ? 'Loading…' : 'Load QueryMT in this kernel'}
          </button>
        </div>
      );
    case 'ready':
      return null;
  }
}

interface IProvidersProps {
  kernel: IKernelState;
  run: (id: string, args?: { [key: string]: any }) => void;
  busy: (action: string) => boolean;
}

function Providers({ kernel, run, busy }: IProvidersProps): JSX.Element {
  return (
    <div className="jp-QueryMT-registry">
      <div className="jp-QueryMT-summary">
        <span>{summary(kernel)}</span>
        {busy('load') || busy('reload') ? <span> · loading…</span> : null}
      </div>
      <div className="jp-QueryMT-defaults" title="%querymt default">
        default: {defaultsLabel(kernel)}
      </div>
      {kernel.config_path && (
        <div className="jp-QueryMT-config" title={kernel.config_path}>
          config: {kernel.config_path.split('/').pop()}
        </div>
      )}
      <ul className="jp-QueryMT-providers">
        {kernel.providers.map(p => (
          <Provider
            key={p.name}
            provider={p}
            isDefault={p.name === kernel.default_provider}
            benchAvailable={kernel.bench_available}
            run={run}
          />
        ))}
      </ul>
      {kernel.providers.length === 0 && (
        <p className="jp-QueryMT-note">
          The config lists no provider. Add <code>[[providers]]</code> to
          plugins.toml.
        </p>
      )}
    </div>
  );
}

interface IProviderProps {
  provider: IProvider;
  isDefault: boolean;
  benchAvailable: boolean;
  run: (id: string, args?: { [key: string]: any }) => void;
}

function Provider({
  provider: p,
  isDefault,
  benchAvailable,
  run
}: IProviderProps): JSX.Element {
  return (
    <li
      className="jp-QueryMT-provider"
      data-provider={p.name}
      data-type={p.type}
      data-status={p.status}
    >
      <div className="jp-QueryMT-providerHead">
        <span className="jp-QueryMT-name">{p.name}</span>
        <span className={`jp-QueryMT-badge jp-QueryMT-type-${p.type}`}>
          {typeLabel(p.type)}
        </span>
        {p.generation && (
          <span className="jp-QueryMT-badge" title="wire generation">
            gen {p.generation}
          </span>
        )}
        {isDefault && (
          <span className="jp-QueryMT-badge jp-mod-default">default</span>
        )}
        <span className={`jp-QueryMT-status jp-QueryMT-status-${p.status}`}>
          {statusLabel(p)}
        </span>
      </div>
      <dl className="jp-QueryMT-details">
        <dt>source</dt>
        <dd className="jp-QueryMT-source" title={p.source.location}>
          {p.source.display}
        </dd>
        {p.source.digest && (
          <>
            <dt>digest</dt>
            <dd className="jp-QueryMT-digest" title={p.source.digest}>
              {p.source.digest.slice(0, 19)}…
            </dd>
          </>
        )}
        {p.source.layer_digest && (
          <>
            <dt>file</dt>
            <dd className="jp-QueryMT-digest" title={p.source.layer_digest}>
              {p.source.layer_digest.slice(0, 19)}…
            </dd>
          </>
        )}
        <dt>hosts</dt>
        <dd className="jp-QueryMT-hosts">{hostsLabel(p)}</dd>
        <dt>ops</dt>
        <dd className="jp-QueryMT-operations">
          {p.operations.length
            ? p.operations.map(op => (
                <span key={op} className="jp-QueryMT-op">
                  {op}
                </span>
              ))
            : p.status === 'loaded'
              ? 'none'
              : 'known once loaded'}
        </dd>
      </dl>
      {p.error && <div className="jp-QueryMT-error">{p.error}</div>}
      <div className="jp-QueryMT-actions">
        <button
          className="jp-Button jp-mod-styled jp-mod-accept"
          data-action="insert"
          title={`Insert a %%querymt ${p.name} cell below the active cell`}
          onClick={() => run(CommandIDs.insertPromptCell, { provider: p.name })}
        >
          Insert prompt cell
        </button>
        <button
          className="jp-Button jp-mod-styled jp-mod-reject"
          data-action="bench"
          title={
            benchAvailable
              ? `Run %querymt_bench ${p.name} in a new cell`
              : 'The kernel has no %querymt_bench magic'
          }
          onClick={() => run(CommandIDs.runBench, { provider: p.name })}
        >
          Benchmark
        </button>
      </div>
    </li>
  );
}
