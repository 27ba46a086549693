/**
 * The records the extension reads: the Trace JSON (docs/trace-format.md), the comm protocol of
 * the `kernel_bridge.trace` target (kernel_bridge/events.py, docs/events.schema.json; the unit
 * tests replay a real run of it, test/scripted-run.json), and the view model both render.
 */

/** The MIME type of the bundle `%%reason` displays last, holding the whole trace. */
export const TRACE_MIME = 'application/vnd.kernel-bridge.trace+json';

/** The comm target the kernel opens one comm on per run. */
export const COMM_TARGET = 'kernel_bridge.trace';

/** An nbformat v4 output (stream, display_data, execute_result, error). */
export interface IOutputJSON {
  output_type: string;
  [key: string]: unknown;
}

export interface ISpanJSON {
  kind: 'think' | 'answer' | 'text' | 'code' | 'markup';
  start: number;
  end: number;
  step?: number;
}

export interface ISegmentJSON {
  kind: 'model' | 'tool';
  text: string;
  spans?: ISpanJSON[];
}

export interface IStepJSON {
  index: number;
  code: string;
  status: 'ok' | 'error' | 'timeout' | 'died';
  output_text: string;
  outputs: IOutputJSON[];
  execution_count: number | null;
  started: number;
  duration_s: number;
  new_files: string[];
  restarted?: boolean;
}

export interface IUsage {
  prompt_tokens: number;
  model_tokens: number;
  tool_tokens: number;
}

export interface ILabels {
  rating?: 'up' | 'down';
  note?: string;
  [key: string]: unknown;
}

/** A trace, format v1. */
export interface ITraceJSON {
  format_version: number;
  id: string;
  created: string;
  model: string;
  sampler: { name: string; [key: string]: unknown };
  profile: string;
  messages: { role: string; content: unknown }[];
  segments: ISegmentJSON[];
  steps: IStepJSON[];
  answer?: string | null;
  finish_reason: string | null;
  error?: string | null;
  usage?: Partial<IUsage>;
  timings?: { [key: string]: number };
  labels?: ILabels;
  reward?: number | null;
  [key: string]: unknown;
}

/** The data a trace comm is opened with. */
export interface ICommOpenData {
  version: number;
  trace_id: string;
  model: string;
  question: string | null;
  mode: string;
  trace_path: string;
}

/** Where a model's load stands (`ready`: done); `fraction` of the stage, null when not known. */
export interface ILoadingState {
  stage: 'converting' | 'loading';
  message: string;
  fraction: number | null;
}

/** One event of a `{"events": [...]}` comm message. */
export type CommEvent =
  | {
      type: 'loading';
      stage: ILoadingState['stage'] | 'ready';
      message: string;
      fraction: number | null;
    }
  | { type: 'text'; section: string; text: string }
  | { type: 'code'; section: string; code: string; runs: boolean }
  | { type: 'step_started'; index: number }
  | { type: 'output'; index: number; output: IOutputJSON }
  | {
      type: 'step_finished';
      index: number;
      status: IStepJSON['status'];
      duration_s: number;
      new_files: string[];
    }
  | { type: 'cells'; cells: ICellJSON[] }
  | {
      type: 'finished';
      trace_id: string;
      finish_reason: string | null;
      answer: string | null;
      error: string | null;
      trace_path: string;
    };

/** An nbformat v4 cell. */
export interface ICellJSON {
  cell_type: string;
  source: string | string[];
  [key: string]: unknown;
}

// -- the view model ----------------------------------------------------------------------------

/** Prose of one section (thinking, plain text, the answer). */
export interface ITextItem {
  kind: 'text';
  section: string;
  text: string;
}

export type StepStatus = 'pending' | 'running' | 'skipped' | IStepJSON['status'];

/** A code block: run by the kernel (`runs`), or only written (e.g. code in the answer). */
export interface IStepItem {
  kind: 'step';
  section: string;
  code: string;
  runs: boolean;
  /** Index into the trace's steps once the kernel started it. */
  index: number | null;
  status: StepStatus;
  outputs: IOutputJSON[];
  durationS: number | null;
  newFiles: string[];
  restarted: boolean;
  /** When the step started (ms since epoch), for a live elapsed time. */
  startedAt: number | null;
}

export type TraceItem = ITextItem | IStepItem;

/** What the sidebar and the renderer show of one trace, live or saved. */
export interface ITraceView {
  id: string;
  model: string;
  question: string | null;
  mode: string | null;
  tracePath: string | null;
  running: boolean;
  finishReason: string | null;
  answer: string | null;
  error: string | null;
  items: TraceItem[];
  usage: IUsage | null;
  totalS: number | null;
  labels: ILabels;
  /** Cells sent by `%%reason --cells`, to insert below the cell. */
  cells: ICellJSON[] | null;
  /** The whole trace, once known (the bundle the run displays last, or a saved output). */
  trace: ITraceJSON | null;
  /** When the run started (ms since epoch). */
  startedAt: number;
  /** The model is loading (the run's first events), else null. */
  loading: ILoadingState | null;
}
