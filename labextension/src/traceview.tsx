/**
 * The view of one trace, shared by the sidebar (live) and the MIME renderer (saved): a header
 * with status, timing and token counts, then a virtualized list of the thinking, the code blocks
 * with their outputs, and the answer. Only the rows near the viewport are in the DOM, so a
 * 1,000-step trace stays as fast as a short one.
 */
import * as React from 'react';
import {
  measureElement,
  observeElementRect,
  useVirtualizer,
  Virtualizer
} from '@tanstack/react-virtual';

import { formatDuration, stepCounts } from './reducer';
import { IOutputJSON, IStepItem, ITextItem, ITraceView, TraceItem } from './types';

/** What the view needs from JupyterLab to draw rich content; tests pass plain stand-ins. */
export interface IRenderServices {
  /** Draw nbformat outputs into `host`; returns a function that disposes of them. */
  renderOutputs(outputs: IOutputJSON[], host: HTMLElement): () => void;
  /** Draw highlighted Python code into `host`. */
  highlight(code: string, host: HTMLElement): void;
  /** Draw Markdown into `host`; returns a function that disposes of it. */
  renderMarkdown(text: string, host: HTMLElement): () => void;
}

export interface ITraceViewProps {
  view: ITraceView;
  services: IRenderServices;
  /** Thinking sections start open (they can always be toggled one by one). */
  showThinking: boolean;
  /** Keep the newest row in view while the run streams, unless the user scrolled up. */
  follow?: boolean;
  /** The size of the viewport before it is measured (tests, first paint). */
  initialHeight?: number;
  /** Grow with the content up to this height (px), then scroll; unset: fill the parent. */
  maxHeight?: number;
}

type Row = { kind: 'item'; item: TraceItem; position: number } | { kind: 'answer' };

const STATUS_TEXT: { [status: string]: string } = {
  pending: 'queued',
  running: 'running',
  skipped: 'not run',
  ok: 'ok',
  error: 'error',
  timeout: 'timed out',
  died: 'kernel died'
};

const FINISH_TEXT: { [reason: string]: string } = {
  answer: 'answered',
  no_answer: 'no answer',
  max_steps: 'stopped: step limit',
  max_tokens: 'stopped: token limit',
  time_limit: 'stopped: time limit',
  interrupted: 'stopped',
  error: 'failed'
};

/** The rows the list shows: streamed answer text is left out once the answer is known. */
function rowsOf(view: ITraceView): Row[] {
  const rows: Row[] = [];
  view.items.forEach((item, position) => {
    if (item.kind === 'text' && item.section === 'answer' && view.answer !== null) {
      return;
    }
    if (item.kind === 'text' && !item.text.trim()) {
      return;
    }
    rows.push({ kind: 'item', item, position });
  });
  if (view.answer !== null || view.error !== null) {
    rows.push({ kind: 'answer' });
  }
  return rows;
}

function estimateRow(row: Row): number {
  if (row.kind === 'answer') {
    return 80;
  }
  if (row.item.kind === 'text') {
    return 28 + Math.min(12, Math.ceil(row.item.text.length / 60)) * 18;
  }
  return 64 + row.item.code.split('\n').length * 18 + row.item.outputs.length * 24;
}

/**
 * The viewport's size, except while it is not laid out: a hidden tab or side panel
 * (`display: none`) measures 0 x 0, and taking that would leave no rows to draw, hence nothing
 * to measure again once it is shown (the view would stay collapsed to its header).
 */
function observeShownRect(
  instance: Virtualizer<HTMLDivElement, Element>,
  cb: (rect: { width: number; height: number }) => void
): void | (() => void) {
  return observeElementRect(instance, rect => {
    if (rect.width > 0 || rect.height > 0) {
      cb(rect);
    }
  });
}

/** A row's height; a row measures 0 px only while hidden (it has padding), so keep its last. */
function measureShownRow(
  element: Element,
  entry: ResizeObserverEntry | undefined,
  instance: Virtualizer<HTMLDivElement, Element>
): number {
  const size = measureElement(element, entry, instance);
  if (size > 0) {
    return size;
  }
  const index = instance.indexFromElement(element);
  return (
    instance.itemSizeCache.get(instance.options.getItemKey(index)) ??
    instance.options.estimateSize(index)
  );
}

export function TraceView(props: ITraceViewProps): JSX.Element {
  const { view, services, showThinking, follow = false, initialHeight = 600, maxHeight } = props;
  const scrollRef = React.useRef<HTMLDivElement>(null);
  const [openThinking, setOpenThinking] = React.useState<Map<number, boolean>>(new Map());
  const stick = React.useRef(true);
  const rows = React.useMemo(() => rowsOf(view), [view]);

  const virtualizer = useVirtualizer({
    count: rows.length,
    getScrollElement: () => scrollRef.current,
    estimateSize: index => estimateRow(rows[index]),
    getItemKey: index => {
      const row = rows[index];
      return row.kind === 'answer' ? 'answer' : row.position;
    },
    overscan: 4,
    initialRect: { width: 320, height: initialHeight },
    observeElementRect: observeShownRect,
    measureElement: measureShownRow
  });

  // While streaming, stay at the bottom unless the user scrolled away from it.
  React.useEffect(() => {
    if (follow && view.running && stick.current && rows.length > 0) {
      virtualizer.scrollToIndex(rows.length - 1, { align: 'end' });
    }
  }, [follow, view.running, rows, virtualizer]);

  const onScroll = () => {
    const el = scrollRef.current;
    if (el) {
      stick.current = el.scrollHeight - el.scrollTop - el.clientHeight < 48;
    }
  };

  const toggle = (position: number, open: boolean) =>
    setOpenThinking(prev => new Map(prev).set(position, open));

  return (
    <div className="kb-Trace" data-trace-id={view.id} data-running={view.running}>
      <TraceHeader view={view} />
      <div
        className="kb-Trace-scroll"
        ref={scrollRef}
        onScroll={onScroll}
        tabIndex={0}
        aria-label="Trace steps"
        style={
          maxHeight === undefined
            ? undefined
            : { height: `${Math.min(virtualizer.getTotalSize(), maxHeight)}px` }
        }
      >
        <div
          className="kb-Trace-rows"
          role="list"
          style={{ height: `${virtualizer.getTotalSize()}px` }}
        >
          {virtualizer.getVirtualItems().map(virtual => {
            const row = rows[virtual.index];
            return (
              <div
                key={virtual.key}
                role="listitem"
                className="kb-Trace-row"
                data-index={virtual.index}
                ref={virtualizer.measureElement}
                style={{ transform: `translateY(${virtual.start}px)` }}
              >
                {row.kind === 'answer' ? (
                  <AnswerView view={view} services={services} />
                ) : row.item.kind === 'text' ? (
                  <TextView
                    item={row.item}
                    open={openThinking.get(row.position) ?? showThinking}
                    onToggle={open => toggle(row.position, open)}
                  />
                ) : (
                  <StepView item={row.item} services={services} />
                )}
              </div>
            );
          })}
        </div>
      </div>
    </div>
  );
}

function TraceHeader(props: { view: ITraceView }): JSX.Element {
  const { view } = props;
  const { ran, failed } = stepCounts(view);
  const state = view.running ? 'running' : (view.finishReason ?? 'unknown');
  const tokens = view.usage
    ? `${view.usage.model_tokens.toLocaleString()} model · ${view.usage.tool_tokens.toLocaleString()} tool · ${view.usage.prompt_tokens.toLocaleString()} prompt tokens`
    : null;
  return (
    <div className="kb-Trace-header">
      {view.question && (
        <div className="kb-Trace-question" title={view.question}>
          {view.question}
        </div>
      )}
      <div className="kb-Trace-meta">
        <span className={`kb-Badge kb-Badge-${state}`} role="status" aria-live="polite">
          {view.running ? 'running…' : (FINISH_TEXT[state] ?? state)}
        </span>
        <span className="kb-Trace-model" title="model">
          {view.model}
        </span>
        <span className="kb-Trace-steps">
          {ran} step{ran === 1 ? '' : 's'}
          {failed ? ` · ${failed} failed` : ''}
        </span>
        {view.totalS !== null && (
          <span className="kb-Trace-time">{formatDuration(view.totalS)}</span>
        )}
        {tokens && <span className="kb-Trace-tokens">{tokens}</span>}
      </div>
    </div>
  );
}

function TextView(props: {
  item: ITextItem;
  open: boolean;
  onToggle: (open: boolean) => void;
}): JSX.Element {
  const { item, open, onToggle } = props;
  if (item.section !== 'think') {
    return (
      <div className={`kb-Text kb-Text-${item.section}`}>{item.text.replace(/^\n+|\s+$/g, '')}</div>
    );
  }
  const text = item.text.replace(/^\n+|\s+$/g, '');
  const firstLine = text.split('\n', 1)[0];
  return (
    <div className="kb-Think" data-open={open}>
      <button
        type="button"
        className="kb-Think-toggle"
        aria-expanded={open}
        onClick={() => onToggle(!open)}
      >
        <span className="kb-Think-caret" aria-hidden="true">
          {open ? '▾' : '▸'}
        </span>
        <span className="kb-Think-label">Thinking</span>
        {!open && <span className="kb-Think-preview">{firstLine}</span>}
      </button>
      {open && <div className="kb-Think-body">{text}</div>}
    </div>
  );
}

function StepView(props: { item: IStepItem; services: IRenderServices }): JSX.Element {
  const { item, services } = props;
  const [now, setNow] = React.useState(Date.now());
  React.useEffect(() => {
    if (item.status !== 'running') {
      return;
    }
    const timer = setInterval(() => setNow(Date.now()), 500);
    return () => clearInterval(timer);
  }, [item.status]);
  const duration =
    item.durationS !== null
      ? formatDuration(item.durationS)
      : item.status === 'running' && item.startedAt !== null
        ? formatDuration(Math.max(0, (now - item.startedAt) / 1000))
        : '';
  const label = item.index !== null ? `Step ${item.index + 1}` : 'Code';
  return (
    <div
      className="kb-Step"
      data-status={item.status}
      aria-label={`${label}: ${STATUS_TEXT[item.status] ?? item.status}`}
    >
      <div className="kb-Step-header">
        <span className="kb-Step-label">{label}</span>
        <span className={`kb-Badge kb-Badge-${item.status}`}>
          {STATUS_TEXT[item.status] ?? item.status}
        </span>
        <span className="kb-Step-time">{duration}</span>
        {item.restarted && <span className="kb-Step-note">kernel restarted</span>}
        {item.newFiles.length > 0 && (
          <span className="kb-Step-files" title={item.newFiles.join('\n')}>
            new: {item.newFiles.join(', ')}
          </span>
        )}
      </div>
      <CodeView code={item.code} services={services} />
      {item.outputs.length > 0 && <OutputsView outputs={item.outputs} services={services} />}
    </div>
  );
}

function CodeView(props: { code: string; services: IRenderServices }): JSX.Element {
  const ref = React.useRef<HTMLPreElement>(null);
  const code = props.code.replace(/\n+$/, '');
  React.useLayoutEffect(() => {
    if (ref.current) {
      ref.current.textContent = code;
      props.services.highlight(code, ref.current);
    }
  }, [code, props.services]);
  return <pre className="kb-Code cm-s-jupyter" ref={ref} aria-label="code" />;
}

function OutputsView(props: { outputs: IOutputJSON[]; services: IRenderServices }): JSX.Element {
  const ref = React.useRef<HTMLDivElement>(null);
  React.useLayoutEffect(() => {
    if (!ref.current) {
      return;
    }
    return props.services.renderOutputs(props.outputs, ref.current);
  }, [props.outputs, props.services]);
  return <div className="kb-Outputs" ref={ref} aria-label="output" />;
}

function AnswerView(props: { view: ITraceView; services: IRenderServices }): JSX.Element {
  const { view, services } = props;
  const ref = React.useRef<HTMLDivElement>(null);
  React.useLayoutEffect(() => {
    if (!ref.current || view.answer === null) {
      return;
    }
    return services.renderMarkdown(view.answer, ref.current);
  }, [view.answer, services]);
  return (
    <div className="kb-Answer" role="group" aria-label="Answer">
      <div className="kb-Answer-label">Answer</div>
      {view.answer !== null && <div className="kb-Answer-body" ref={ref} />}
      {view.error && <div className="kb-Answer-error">{view.error}</div>}
    </div>
  );
}
