/**
 * The sidebar's content: the active notebook's live trace and this session's history, with Stop,
 * Insert as cells, Copy answer, Export for training, and a 👍/👎 with a note saved in the trace's
 * labels. What the buttons do comes in as `ISidebarActions` (sidebarwidget.tsx implements them).
 */
import * as React from 'react';

import type { NotebookConnection } from './connection';
import { KernelActionError } from './kernelactions';
import { withLabels } from './reducer';
import { IRenderServices, TraceView } from './traceview';
import { ILabels, ITraceJSON, ITraceView } from './types';

/** What the sidebar does with a trace; the widget implements it over a notebook connection. */
export interface ISidebarActions {
  stop(): Promise<void>;
  insertCells(view: ITraceView): Promise<number>;
  copyAnswer(view: ITraceView): void;
  exportTraces(views: ITraceView[]): void;
  saveLabels(view: ITraceView, labels: ILabels): Promise<ILabels>;
}

export interface ISidebarProps {
  connection: NotebookConnection | null;
  services: IRenderServices;
  showThinking: boolean;
  actions: ISidebarActions;
}

/** One line per trace in JSONL, the format the trainer and `TraceStore` read. */
export function tracesToJSONL(views: ITraceView[]): string {
  return views
    .filter(view => view.trace !== null)
    .map(view => JSON.stringify({ ...(view.trace as ITraceJSON), labels: view.labels }) + '\n')
    .join('');
}

export function Sidebar(props: ISidebarProps): JSX.Element {
  const { connection, services, showThinking, actions } = props;
  const traces = connection?.traces ?? null;
  const [, setVersion] = React.useState(0);
  const [message, setMessage] = React.useState('');
  React.useEffect(() => {
    if (!connection) {
      return;
    }
    const bump = () => setVersion(v => v + 1);
    connection.changed.connect(bump);
    return () => {
      connection.changed.disconnect(bump);
    };
  }, [connection]);
  React.useEffect(() => setMessage(''), [connection]);

  if (!connection || !traces) {
    return (
      <div className="kb-Sidebar kb-Sidebar-empty">
        <p>Open a notebook and run a cell like:</p>
        <pre className="kb-Code">{'%load_ext kernel_bridge\n\n%%reason\nWhat is 2**100?'}</pre>
      </div>
    );
  }
  const selected = traces.selected;
  const live = traces.live;
  const report = (promise: Promise<string>) =>
    promise.then(setMessage, (error: unknown) =>
      setMessage(error instanceof KernelActionError ? error.message : String(error))
    );

  return (
    <div className="kb-Sidebar">
      <div className="kb-Sidebar-title">
        <span className="kb-Sidebar-notebook" title={connection.panel.context.path}>
          {connection.panel.title.label}
        </span>
        <span className="kb-Sidebar-kernel">{connection.sessionContext.kernelDisplayStatus}</span>
      </div>
      <History
        traces={traces.traces}
        selected={selected}
        onSelect={id => traces.select(id)}
        onExportAll={() => actions.exportTraces([...traces.traces])}
      />
      {selected ? (
        <>
          <div className="kb-Toolbar" role="toolbar" aria-label="Trace actions">
            <button
              type="button"
              className="kb-Button kb-Button-stop"
              disabled={!live}
              onClick={() =>
                report(actions.stop().then(() => 'Stop sent: the kernel is interrupted'))
              }
              aria-label="Stop the run"
              title="Stop the run (interrupts the kernel)"
            >
              ■ Stop
            </button>
            <button
              type="button"
              className="kb-Button"
              disabled={selected.running}
              onClick={() => report(actions.insertCells(selected).then(n => `Inserted ${n} cells`))}
              aria-label="Insert as cells"
            >
              Insert as cells
            </button>
            <button
              type="button"
              className="kb-Button"
              disabled={!selected.answer}
              onClick={() => {
                actions.copyAnswer(selected);
                setMessage('Answer copied');
              }}
              aria-label="Copy answer"
            >
              Copy answer
            </button>
            <button
              type="button"
              className="kb-Button"
              disabled={!selected.trace}
              onClick={() => {
                actions.exportTraces([selected]);
                setMessage('Trace exported as JSONL');
              }}
              aria-label="Export for training"
              title="Download the trace as JSONL, the format the trainer reads"
            >
              Export for training
            </button>
          </div>
          {!selected.running && selected.tracePath && (
            <Feedback
              key={selected.id}
              view={selected}
              onSave={labels =>
                report(
                  actions.saveLabels(selected, labels).then(saved => {
                    traces.update(selected.id, view => withLabels(view, saved));
                    return 'Feedback saved in the trace';
                  })
                )
              }
            />
          )}
          <TraceView
            key={selected.id}
            view={selected}
            services={services}
            showThinking={showThinking}
            follow={true}
          />
        </>
      ) : (
        <p className="kb-Sidebar-hint">
          No trace yet. Run <code>%%reason</code> in this notebook (after{' '}
          <code>%load_ext kernel_bridge</code>); its thinking, code and answer show here live.
        </p>
      )}
      <div className="kb-Sidebar-message" role="status" aria-live="polite">
        {message}
      </div>
    </div>
  );
}

function History(props: {
  traces: readonly ITraceView[];
  selected: ITraceView | null;
  onSelect: (id: string | null) => void;
  onExportAll: () => void;
}): JSX.Element | null {
  const { traces, selected, onSelect, onExportAll } = props;
  if (traces.length === 0) {
    return null;
  }
  return (
    <details className="kb-History" open={traces.length > 1}>
      <summary>History ({traces.length})</summary>
      <ol className="kb-History-list" aria-label="Traces of this session">
        {[...traces].reverse().map(view => (
          <li key={view.id}>
            <button
              type="button"
              className="kb-History-item"
              aria-current={selected?.id === view.id ? 'true' : undefined}
              onClick={() => onSelect(view.id)}
              title={view.question ?? view.id}
            >
              <span
                className={`kb-Dot kb-Dot-${view.running ? 'running' : view.finishReason}`}
                aria-hidden="true"
              />
              <span className="kb-History-question">{view.question ?? view.id}</span>
              <span
                className="kb-History-rating"
                aria-label={view.labels.rating ? `rated ${view.labels.rating}` : undefined}
              >
                {view.labels.rating === 'up' ? '👍' : view.labels.rating === 'down' ? '👎' : ''}
              </span>
            </button>
          </li>
        ))}
      </ol>
      <button type="button" className="kb-Button kb-History-export" onClick={onExportAll}>
        Export all ({traces.filter(view => view.trace).length})
      </button>
    </details>
  );
}

const RATINGS = [
  { value: 'up', label: 'Good trace', emoji: '👍' },
  { value: 'down', label: 'Bad trace', emoji: '👎' }
] as const;

function Feedback(props: { view: ITraceView; onSave: (labels: ILabels) => void }): JSX.Element {
  const { view, onSave } = props;
  const rating = view.labels.rating ?? null;
  const [note, setNote] = React.useState(view.labels.note ?? '');
  const rate = (value: 'up' | 'down') =>
    onSave({ rating: rating === value ? null : value, note } as unknown as ILabels);
  return (
    <div className="kb-Feedback" role="group" aria-label="Feedback on this trace">
      {RATINGS.map(({ value, label, emoji }) => (
        <button
          key={value}
          type="button"
          className="kb-Button kb-Rate"
          aria-pressed={rating === value}
          aria-label={label}
          title={`${label} (${emoji})`}
          onClick={() => rate(value)}
        >
          {emoji}
        </button>
      ))}
      <input
        className="kb-Note"
        type="text"
        value={note}
        placeholder="Note (optional)"
        aria-label="Note on this trace"
        onChange={event => setNote(event.target.value)}
        onKeyDown={event => {
          if (event.key === 'Enter') {
            onSave({ rating, note } as unknown as ILabels);
          }
        }}
      />
      <button
        type="button"
        className="kb-Button"
        aria-label="Save note"
        onClick={() => onSave({ rating, note } as unknown as ILabels)}
      >
        Save
      </button>
    </div>
  );
}
