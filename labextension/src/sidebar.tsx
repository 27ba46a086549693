/**
 * The sidebar's content: the active notebook's live trace (from the moment its cell starts: while
 * the model loads it says so, with a progress bar) and this session's history, with Stop,
 * Insert as cells, Copy answer, Export for training, a 👍/👎 with a note saved in the trace's
 * labels, and the ask box. What the buttons do comes in as `ISidebarActions` (sidebarwidget.tsx
 * implements them).
 */
import * as React from 'react';

import { AskBox, IAskOptions } from './askbox';
import type { NotebookConnection } from './connection';
import { KernelActionError } from './kernelactions';
import { withLabels } from './reducer';
import { IRenderServices, TraceView } from './traceview';
import { ILabels, ILoadingState, ITraceJSON, ITraceView } from './types';

/** What the sidebar does with a trace; the widget implements it over a notebook connection. */
export interface ISidebarActions {
  stop(): Promise<void>;
  insertCells(view: ITraceView): Promise<number>;
  copyAnswer(view: ITraceView): void;
  exportTraces(views: ITraceView[]): void;
  saveLabels(view: ITraceView, labels: ILabels): Promise<ILabels>;
  /** Insert a `%%reason` cell with this question below the active cell and run it. */
  ask(question: string, options: IAskOptions): Promise<string>;
}

export interface ISidebarProps {
  connection: NotebookConnection | null;
  services: IRenderServices;
  showThinking: boolean;
  actions: ISidebarActions;
  /** The ask box's options before the user changes them (the settings). */
  askDefaults: IAskOptions;
  /** `--max-steps` when the cell leaves it out. */
  defaultMaxSteps: number | null;
}

/** The sidebar's last message, with the notebook and the runs (count, live one) it is about. */
interface ISaid {
  text: string;
  connection: NotebookConnection | null;
  runs: string;
}

/** One line per trace in JSONL, the format the trainer and `TraceStore` read. */
export function tracesToJSONL(views: ITraceView[]): string {
  return views
    .filter(view => view.trace !== null)
    .map(view => JSON.stringify({ ...(view.trace as ITraceJSON), labels: view.labels }) + '\n')
    .join('');
}

export function Sidebar(props: ISidebarProps): JSX.Element {
  const { connection, services, showThinking, actions, askDefaults, defaultMaxSteps } = props;
  const traces = connection?.traces ?? null;
  const [, setVersion] = React.useState(0);
  const [said, setSaid] = React.useState<ISaid | null>(null);
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
  // A message is about one notebook and the runs as they were when it was said: another
  // notebook, or a run that starts or ends, makes it stale ("Stop sent" is not about the next run).
  const runs = `${traces?.traces.length ?? 0}:${traces?.live?.id ?? ''}`;
  const setMessage = (text: string) => setSaid({ text, connection, runs });
  const message = said && said.connection === connection && said.runs === runs ? said.text : '';

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
          {/* One keyed part per notebook and trace: its note, scroll and open sections start
              afresh when either changes, and nothing of the one before stays behind. */}
          <React.Fragment key={`${connection.panel.id}/${selected.id}`}>
            {!selected.running && selected.tracePath ? (
              <Feedback
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
            ) : null}
            {selected.loading ? <Loading state={selected.loading} /> : null}
            <TraceView
              view={selected}
              services={services}
              showThinking={showThinking}
              follow={true}
            />
          </React.Fragment>
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
      <AskBox
        defaults={askDefaults}
        defaultMaxSteps={defaultMaxSteps}
        onAsk={(question, options) => {
          const asked = actions.ask(question, options);
          report(asked);
          return asked.then(() => undefined);
        }}
      />
    </div>
  );
}

/** The run's model is loading: what the kernel says it is doing, with a progress bar. */
function Loading(props: { state: ILoadingState }): JSX.Element {
  const { stage, message, fraction } = props.state;
  const percent = fraction === null ? null : Math.round(100 * Math.min(Math.max(fraction, 0), 1));
  return (
    <div className={`kb-Loading kb-Loading-${stage}`} role="status" aria-label="Model loading">
      <span className="kb-Loading-message">{message}</span>
      {/* Without a value the bar is indeterminate: the load did not say how far it is. */}
      <progress
        className="kb-Loading-bar"
        max={1}
        value={fraction === null ? undefined : Math.min(Math.max(fraction, 0), 1)}
        aria-label={percent === null ? message : `${message} ${percent}%`}
      />
      {percent === null ? null : <span className="kb-Loading-percent">{percent}%</span>}
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
