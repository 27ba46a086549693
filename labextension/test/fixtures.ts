import { IRenderServices } from '../src/traceview';
import { CommEvent, ICommOpenData, ITraceJSON } from '../src/types';
import run from './scripted-run.json';

/**
 * What the kernel sends for a real run of tests/scripts/primes.txt (scripted model, real kernel),
 * batched as `TraceComm` batches it, with the run's trace and the pieces Python's `trace_pieces`
 * cuts it into. Written by scripts/sync_from_python.py; tests/test_events.py fails when stale.
 */
export const OPEN: ICommOpenData = run.open as ICommOpenData;
export const EVENTS: CommEvent[][] = run.messages.map(message => message.events as CommEvent[]);
export const RUN_TRACE: ITraceJSON = run.trace as unknown as ITraceJSON;
export const PIECES: IPiece[] = run.pieces;
/** The bundle the run's finished cell holds: the trace packed by kernel_bridge.bundle. */
export const BUNDLE = run.bundle;

/** A piece of a saved trace as kernel_bridge.trace.trace_pieces yields it. */
export interface IPiece {
  kind: string;
  section: string;
  text: string;
  step: number | null;
}

/** The example of docs/trace-format.md. */
export const TRACE: ITraceJSON = {
  format_version: 1,
  id: '3f2a9c1e4b7d4e0f9a6b2c8d1e5f7a90',
  created: '2025-01-31T12:00:00.000Z',
  model: 'Qwen/Qwen2.5-Coder-0.5B-Instruct',
  sampler: { name: 'transformers', temperature: 0.7 },
  profile: 'markdown',
  messages: [{ role: 'user', content: 'What is 2 + 2?' }],
  segments: [
    {
      kind: 'model',
      text: '<think>\nCompute it.\n```python\nprint(2 + 2)\n```\n',
      spans: [
        { kind: 'markup', start: 0, end: 8 },
        { kind: 'think', start: 8, end: 20 },
        { kind: 'markup', start: 20, end: 30 },
        { kind: 'code', start: 30, end: 43, step: 0 },
        { kind: 'markup', start: 43, end: 47 }
      ]
    },
    { kind: 'tool', text: '```output\n4\n```\n' },
    {
      kind: 'model',
      text: '4.\n</think>\n<answer>4</answer>',
      spans: [
        { kind: 'think', start: 0, end: 3 },
        { kind: 'markup', start: 3, end: 11 },
        { kind: 'text', start: 11, end: 12 },
        { kind: 'markup', start: 12, end: 20 },
        { kind: 'answer', start: 20, end: 21 },
        { kind: 'markup', start: 21, end: 30 }
      ]
    }
  ],
  steps: [
    {
      index: 0,
      code: 'print(2 + 2)\n',
      status: 'ok',
      output_text: '4',
      outputs: [{ output_type: 'stream', name: 'stdout', text: '4\n' }],
      execution_count: 1,
      started: 1738324800.25,
      duration_s: 0.011,
      new_files: [],
      restarted: false
    }
  ],
  answer: '4',
  finish_reason: 'answer',
  error: null,
  usage: { prompt_tokens: 14, model_tokens: 38, tool_tokens: 9 },
  timings: { total_s: 1.9 },
  labels: { rating: 'up' },
  reward: null
};

/** A trace with `n` steps, each a code block with one output. */
export function longTrace(n: number): ITraceJSON {
  let text = '';
  const spans: { kind: 'think' | 'code'; start: number; end: number; step?: number }[] = [];
  const steps = [];
  for (let i = 0; i < n; i++) {
    const prose = `Step ${i}: compute.\n`;
    spans.push({ kind: 'think', start: text.length, end: text.length + prose.length });
    text += prose;
    const code = `x${i} = ${i} * 2\n`;
    spans.push({ kind: 'code', start: text.length, end: text.length + code.length, step: i });
    text += code;
    steps.push({
      index: i,
      code,
      status: 'ok' as const,
      output_text: String(i * 2),
      outputs: [{ output_type: 'stream', name: 'stdout', text: `${i * 2}\n` }],
      execution_count: i + 1,
      started: 1738324800 + i,
      duration_s: 0.01,
      new_files: []
    });
  }
  return {
    ...TRACE,
    id: `long${n}`,
    segments: [{ kind: 'model', text, spans }],
    steps,
    answer: 'done',
    labels: {}
  };
}

/** Render services that write plain text into the host (and record each output list drawn). */
export function fakeServices(): IRenderServices & { outputs: unknown[][] } {
  const outputs: unknown[][] = [];
  return {
    outputs,
    renderOutputs: (list, host) => {
      outputs.push(list);
      host.textContent = list.map((o: any) => o.text ?? o.data?.['text/plain']).join('');
      return () => undefined;
    },
    highlight: (code, host) => {
      host.textContent = code;
    },
    renderMarkdown: (text, host) => {
      host.textContent = text;
      return () => undefined;
    }
  };
}
