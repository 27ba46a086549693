/**
 * The event reducer: turns the comm's events (a run in progress) or a saved trace into the one
 * view model (`ITraceView`) that the sidebar and the renderer draw.
 *
 * Pure functions on immutable values: an item that did not change keeps its identity, so React
 * redraws only what an event touched.
 */
import {
  CommEvent,
  ICommOpenData,
  IStepItem,
  ITextItem,
  ITraceJSON,
  ITraceView,
  IUsage,
  TraceItem
} from './types';

/** The view of a run whose comm just opened. */
export function openTrace(data: ICommOpenData, now: number = Date.now()): ITraceView {
  return {
    id: data.trace_id,
    model: data.model,
    question: data.question ?? null,
    mode: data.mode ?? null,
    tracePath: data.trace_path ?? null,
    running: true,
    finishReason: null,
    answer: null,
    error: null,
    items: [],
    usage: null,
    totalS: null,
    labels: {},
    cells: null,
    trace: null,
    startedAt: now,
    loading: null
  };
}

function newStep(section: string, code: string, runs: boolean): IStepItem {
  return {
    kind: 'step',
    section,
    code,
    runs,
    index: null,
    status: runs ? 'pending' : 'skipped',
    outputs: [],
    durationS: null,
    newFiles: [],
    restarted: false,
    startedAt: null
  };
}

/** The position in `items` of the step with this index, searching from the end (the live one). */
function findStep(items: TraceItem[], index: number): number {
  for (let i = items.length - 1; i >= 0; i--) {
    const item = items[i];
    if (item.kind === 'step' && item.index === index) {
      return i;
    }
  }
  return -1;
}

/** Apply one batch of comm events; returns a new view (the old one is not changed). */
export function applyEvents(
  view: ITraceView,
  events: CommEvent[],
  now: number = Date.now()
): ITraceView {
  const items = view.items.slice();
  const next: ITraceView = { ...view, items };
  for (const event of events) {
    if (view.trace !== null && event.type !== 'finished' && event.type !== 'cells') {
      // The whole trace arrived (its bundle is displayed just before the comm's last batch):
      // it already holds what these events say.
      continue;
    }
    if (event.type !== 'loading') {
      next.loading = null; // the run's own events: the model has loaded
    }
    switch (event.type) {
      case 'loading':
        next.loading =
          event.stage === 'ready'
            ? null
            : { stage: event.stage, message: event.message, fraction: event.fraction ?? null };
        break;
      case 'text': {
        const last = items[items.length - 1];
        if (last && last.kind === 'text' && last.section === event.section) {
          items[items.length - 1] = { ...last, text: last.text + event.text };
        } else {
          items.push({ kind: 'text', section: event.section, text: event.text });
        }
        break;
      }
      case 'code':
        items.push(newStep(event.section, event.code, event.runs));
        break;
      case 'step_started': {
        let at = -1;
        for (let i = items.length - 1; i >= 0; i--) {
          const item = items[i];
          if (item.kind === 'step' && item.runs && item.index === null) {
            at = i;
            break;
          }
        }
        if (at < 0) {
          items.push(newStep('think', '', true));
          at = items.length - 1;
        }
        items[at] = {
          ...(items[at] as IStepItem),
          index: event.index,
          status: 'running',
          startedAt: now
        };
        break;
      }
      case 'output': {
        const at = findStep(items, event.index);
        if (at >= 0) {
          const step = items[at] as IStepItem;
          items[at] = { ...step, outputs: [...step.outputs, event.output] };
        }
        break;
      }
      case 'step_finished': {
        const at = findStep(items, event.index);
        if (at >= 0) {
          items[at] = {
            ...(items[at] as IStepItem),
            status: event.status,
            durationS: event.duration_s,
            newFiles: event.new_files ?? []
          };
        }
        break;
      }
      case 'cells':
        next.cells = event.cells;
        break;
      case 'finished':
        next.running = false;
        next.finishReason = event.finish_reason;
        next.answer = event.answer;
        next.error = event.error;
        next.tracePath = event.trace_path ?? next.tracePath;
        next.totalS = next.totalS ?? (now - view.startedAt) / 1000;
        break;
      default:
        break; // an event of a newer protocol: ignored
    }
  }
  return next;
}

/** The comm closed: a run that never said `finished` (the kernel died, or it was cut off). */
export function closeTrace(view: ITraceView): ITraceView {
  if (!view.running) {
    return view;
  }
  const items = view.items.map(item =>
    item.kind === 'step' && (item.status === 'running' || item.status === 'pending')
      ? { ...item, status: 'died' as const }
      : item
  );
  return {
    ...view,
    items,
    running: false,
    loading: null,
    finishReason: view.finishReason ?? 'interrupted'
  };
}

/** Slice a Python string by code point offsets (the spans' unit), as docs/trace-format.md says. */
function codePointSlicer(text: string): (start: number, end: number) => string {
  if (!/[\uD800-\uDFFF]/.test(text)) {
    return (start, end) => text.slice(start, end);
  }
  const points = Array.from(text);
  return (start, end) => points.slice(start, end).join('');
}

/** The view of a whole trace (a saved output, or the bundle a run displays last). */
export function fromTrace(trace: ITraceJSON, tracePath: string | null = null): ITraceView {
  const items: TraceItem[] = [];
  const steps = trace.steps ?? [];
  const prose = (section: string, text: string) => {
    if (!text) {
      return;
    }
    const last = items[items.length - 1];
    if (last && last.kind === 'text' && last.section === section) {
      items[items.length - 1] = { ...last, text: last.text + text };
    } else {
      items.push({ kind: 'text', section, text } as ITextItem);
    }
  };
  for (const segment of trace.segments ?? []) {
    if (segment.kind !== 'model') {
      continue; // tool segments are the steps' outputs
    }
    if (!segment.spans) {
      prose('text', segment.text);
      continue;
    }
    const slice = codePointSlicer(segment.text);
    let section = 'text';
    for (const span of segment.spans) {
      const text = slice(span.start, span.end);
      if (span.kind === 'markup') {
        continue;
      }
      if (span.kind !== 'code') {
        section = span.kind;
        prose(section, text);
        continue;
      }
      const step = span.step !== undefined && span.step !== null ? steps[span.step] : undefined;
      const item = newStep(section, text, step !== undefined);
      if (step) {
        item.index = step.index;
        item.status = step.status;
        item.outputs = step.outputs ?? [];
        item.durationS = step.duration_s;
        item.newFiles = step.new_files ?? [];
        item.restarted = !!step.restarted;
      }
      items.push(item);
    }
  }
  const user = [...(trace.messages ?? [])].reverse().find(m => m.role === 'user');
  const usage = trace.usage
    ? ({ prompt_tokens: 0, model_tokens: 0, tool_tokens: 0, ...trace.usage } as IUsage)
    : null;
  const created = Date.parse(trace.created);
  return {
    id: trace.id,
    model: trace.model,
    question: user && typeof user.content === 'string' ? user.content : null,
    mode: null,
    tracePath,
    running: false, // a trace bundle is shown once its run has ended
    finishReason: trace.finish_reason,
    answer: trace.answer ?? null,
    error: trace.error ?? null,
    items,
    usage,
    totalS: trace.timings?.total_s ?? null,
    labels: { ...(trace.labels ?? {}) },
    cells: null,
    trace,
    startedAt: Number.isNaN(created) ? Date.now() : created,
    loading: null
  };
}

/** The run's full trace arrived (its display bundle): it completes what the events built. */
export function completeTrace(
  view: ITraceView,
  trace: ITraceJSON,
  tracePath: string | null
): ITraceView {
  const full = fromTrace(trace, tracePath ?? view.tracePath);
  return {
    ...full,
    // Keep what the comm said that the trace does not hold; keep item identity where equal.
    mode: view.mode,
    question: full.question ?? view.question,
    cells: view.cells,
    startedAt: view.startedAt,
    items: reuseItems(view.items, full.items)
  };
}

/** `next`, with each item equal in content to the one at its position in `prev` taken from prev. */
function reuseItems(prev: TraceItem[], next: TraceItem[]): TraceItem[] {
  return next.map((item, i) => {
    const old = prev[i];
    if (!old || old.kind !== item.kind) {
      return item;
    }
    if (old.kind === 'text' && item.kind === 'text') {
      return old.text === item.text && old.section === item.section ? old : item;
    }
    const a = old as IStepItem;
    const b = item as IStepItem;
    return a.code === b.code &&
      a.status === b.status &&
      a.index === b.index &&
      a.outputs.length === b.outputs.length &&
      a.durationS === b.durationS
      ? a
      : b;
  });
}

/** The labels changed (a 👍/👎 or a note was saved). */
export function withLabels(view: ITraceView, labels: ITraceView['labels']): ITraceView {
  const trace = view.trace ? { ...view.trace, labels } : null;
  return { ...view, labels, trace };
}

/** How many code blocks ran, and how many failed. */
export function stepCounts(view: ITraceView): { ran: number; failed: number } {
  let ran = 0;
  let failed = 0;
  for (const item of view.items) {
    if (item.kind === 'step' && item.index !== null) {
      ran++;
      if (item.status === 'error' || item.status === 'timeout' || item.status === 'died') {
        failed++;
      }
    }
  }
  return { ran, failed };
}

/** A duration as people read it: 0.42 s, 12.3 s, 2 min 5 s. */
export function formatDuration(seconds: number | null): string {
  if (seconds === null || !Number.isFinite(seconds)) {
    return '';
  }
  if (seconds < 10) {
    return `${seconds.toFixed(2)} s`;
  }
  if (seconds < 60) {
    return `${seconds.toFixed(1)} s`;
  }
  const minutes = Math.floor(seconds / 60);
  return `${minutes} min ${Math.round(seconds - minutes * 60)} s`;
}
