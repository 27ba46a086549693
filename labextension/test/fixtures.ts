import { CommEvent, ICommOpenData, ITraceJSON } from '../src/types';

export const OPEN: ICommOpenData = {
  version: 1,
  trace_id: 'run1',
  model: 'scripted:primes.txt',
  question: 'Sum the primes below 50',
  mode: 'shared',
  trace_path: '/tmp/traces.jsonl'
};

/** What the kernel sends for tests/scripts/primes.txt, batched as TraceComm batches it. */
export const EVENTS: CommEvent[][] = [
  [{ type: 'text', section: 'think', text: '\nI will find the primes below 50' }],
  [
    { type: 'text', section: 'think', text: ' and keep them in a variable.\n' },
    {
      type: 'code',
      section: 'think',
      code: 'primes = [n for n in range(2, 50)]\nprint(len(primes))\n',
      runs: true
    },
    { type: 'step_started', index: 0 }
  ],
  [
    { type: 'output', index: 0, output: { output_type: 'stream', name: 'stdout', text: '15\n' } },
    { type: 'step_finished', index: 0, status: 'ok', duration_s: 0.012, new_files: [] },
    { type: 'text', section: 'think', text: 'There are 15 of them.\n' },
    { type: 'code', section: 'think', code: 'sum(primes)\n', runs: true },
    { type: 'step_started', index: 1 }
  ],
  [
    {
      type: 'output',
      index: 1,
      output: {
        output_type: 'execute_result',
        data: { 'text/plain': '328' },
        metadata: {},
        execution_count: 2
      }
    },
    { type: 'step_finished', index: 1, status: 'ok', duration_s: 0.004, new_files: [] },
    { type: 'text', section: 'think', text: 'So the sum is 328.\n' },
    { type: 'text', section: 'answer', text: 'The primes below 50 sum to **328**.' },
    {
      type: 'finished',
      trace_id: 'run1',
      finish_reason: 'answer',
      answer: 'The primes below 50 sum to **328**.',
      error: null,
      trace_path: '/tmp/traces.jsonl'
    }
  ]
];

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
