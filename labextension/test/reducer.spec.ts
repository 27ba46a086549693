import { describe, expect, it } from 'vitest';

import {
  applyEvents,
  closeTrace,
  completeTrace,
  formatDuration,
  fromTrace,
  openTrace,
  stepCounts,
  withLabels
} from '../src/reducer';
import { IStepItem, ITextItem, ITraceView, TraceItem } from '../src/types';
import { EVENTS, IPiece, OPEN, PIECES, RUN_TRACE, TRACE } from './fixtures';

function run(batches = EVENTS): ITraceView {
  return batches.reduce((view, events) => applyEvents(view, events, 1000), openTrace(OPEN, 0));
}

/** What the views show of each item: its section and text, or a step's code and index. */
function shown(items: TraceItem[]): object[] {
  return items.map(item =>
    item.kind === 'text'
      ? { section: item.section, text: item.text }
      : { section: item.section, code: item.code, index: item.index }
  );
}

/** The items Python's trace_pieces implies: prose of one section joined, as fromTrace joins it. */
function fromPieces(pieces: IPiece[]): object[] {
  const items: object[] = [];
  let last: { section: string; text: string } | null = null;
  for (const piece of pieces) {
    if (piece.kind === 'code') {
      items.push({ section: piece.section, code: piece.text, index: piece.step });
      last = null;
    } else if (last && last.section === piece.kind) {
      last.text += piece.text;
    } else if (piece.text) {
      last = { section: piece.kind, text: piece.text };
      items.push(last);
    }
  }
  return items;
}

describe('event reducer', () => {
  it('opens a running trace from the comm open data', () => {
    const view = openTrace(OPEN, 0);
    expect(view).toMatchObject({
      id: 'run1',
      running: true,
      question: 'Sum the primes below 50',
      tracePath: '/tmp/traces.jsonl',
      items: []
    });
  });

  it('joins streamed text of one section and splits at code blocks', () => {
    const view = run();
    const kinds = view.items.map(item =>
      item.kind === 'text' ? `text:${item.section}` : `step:${(item as IStepItem).index}`
    );
    expect(kinds).toEqual([
      'text:think',
      'step:0',
      'text:think',
      'step:1',
      'text:think',
      'text:text',
      'text:answer',
      'text:text'
    ]);
    expect((view.items[0] as ITextItem).text).toBe(
      '\nI will find the primes below 50 and keep them in a variable.\n'
    );
  });

  it('links each started step to its code block and records outputs, status and time', () => {
    const view = run();
    const step = view.items[1] as IStepItem;
    expect(step.code).toContain('print(len(primes))');
    expect(step.status).toBe('ok');
    expect(step.durationS).toBe(0.01);
    expect(step.outputs).toEqual([{ output_type: 'stream', name: 'stdout', text: '15\n' }]);
    expect(stepCounts(view)).toEqual({ ran: 2, failed: 0 });
  });

  it('shows a step as running between step_started and step_finished', () => {
    const view = run(EVENTS.slice(0, 1));
    const step = view.items[1] as IStepItem;
    expect(step.status).toBe('running');
    expect(step.startedAt).toBe(1000);
    expect(view.running).toBe(true);
  });

  it('finishes with the answer and the finish reason', () => {
    const view = run();
    expect(view.running).toBe(false);
    expect(view.finishReason).toBe('answer');
    expect(view.answer).toBe('The primes below 50 sum to **328**.');
  });

  it('keeps the identity of items an event did not touch', () => {
    const before = run(EVENTS.slice(0, 2));
    const after = applyEvents(before, EVENTS[2]);
    expect(after.items[0]).toBe(before.items[0]);
    expect(after.items[1]).toBe(before.items[1]);
    expect(after.items[3]).not.toBe(before.items[3]);
    expect(before.running).toBe(true); // the old view is unchanged
  });

  it('ignores events of a newer protocol', () => {
    const view = applyEvents(openTrace(OPEN), [{ type: 'something_new' } as any]);
    expect(view.items).toEqual([]);
  });

  it('ends a run whose comm closed without finishing (a kernel restart)', () => {
    const view = closeTrace(run(EVENTS.slice(0, 1)));
    expect(view.running).toBe(false);
    expect(view.finishReason).toBe('interrupted');
    expect((view.items[1] as IStepItem).status).toBe('died');
  });

  it('keeps the cells that --cells sends', () => {
    const cells = [{ cell_type: 'code', source: 'x = 1' }];
    const view = applyEvents(openTrace(OPEN), [{ type: 'cells', cells }]);
    expect(view.cells).toEqual(cells);
  });
});

describe('saved traces', () => {
  it('builds the view of a trace from its spans', () => {
    const view = fromTrace(TRACE, '/data/t.jsonl');
    expect(view.items.map(item => item.kind)).toEqual(['text', 'step', 'text', 'text', 'text']);
    expect(view.items[0]).toEqual({ kind: 'text', section: 'think', text: 'Compute it.\n' });
    const step = view.items[1] as IStepItem;
    expect(step).toMatchObject({
      code: 'print(2 + 2)\n',
      status: 'ok',
      index: 0,
      durationS: 0.011
    });
    expect(step.outputs[0]).toMatchObject({ text: '4\n' });
    expect(view).toMatchObject({
      question: 'What is 2 + 2?',
      answer: '4',
      running: false,
      finishReason: 'answer',
      totalS: 1.9,
      usage: { prompt_tokens: 14, model_tokens: 38, tool_tokens: 9 },
      labels: { rating: 'up' },
      tracePath: '/data/t.jsonl'
    });
  });

  it('shows a run the same live and saved, and as Python walks its trace', () => {
    const saved = fromTrace(RUN_TRACE);
    expect(shown(saved.items)).toEqual(fromPieces(PIECES));
    expect(shown(run().items)).toEqual(shown(saved.items));
    expect(saved.items.filter(item => item.kind === 'step')).toHaveLength(2);
  });

  it('slices spans by code points, as Python does', () => {
    const text = '😀 hi```python\nx=1\n```';
    const trace = {
      ...TRACE,
      segments: [
        {
          kind: 'model' as const,
          text,
          spans: [
            { kind: 'think' as const, start: 0, end: 4 },
            { kind: 'markup' as const, start: 4, end: 14 },
            { kind: 'code' as const, start: 14, end: 18 },
            { kind: 'markup' as const, start: 18, end: 21 }
          ]
        }
      ],
      steps: []
    };
    const view = fromTrace(trace);
    expect((view.items[0] as ITextItem).text).toBe('😀 hi');
    expect((view.items[1] as IStepItem).code).toBe('x=1\n');
    expect((view.items[1] as IStepItem).status).toBe('skipped');
  });

  it('shows a segment without spans as text', () => {
    const view = fromTrace({ ...TRACE, segments: [{ kind: 'model', text: 'plain' }] });
    expect(view.items).toEqual([{ kind: 'text', section: 'text', text: 'plain' }]);
  });

  it('completes a live view with the full trace, keeping cells and equal items', () => {
    const live = run();
    const cells = [{ cell_type: 'markdown', source: 'x' }];
    const withCells = { ...live, cells };
    const full = completeTrace(withCells, { ...TRACE, id: 'run1' }, null);
    expect(full.cells).toBe(cells);
    expect(full.usage?.model_tokens).toBe(38);
    expect(full.tracePath).toBe('/tmp/traces.jsonl');
    expect(full.trace?.id).toBe('run1');
  });

  it('does not apply the last comm batch twice once the full trace arrived', () => {
    // The bundle is displayed before the comm sends its last batch (same iopub order).
    const before = run(EVENTS.slice(0, 2));
    const full = completeTrace(before, RUN_TRACE, null);
    const after = applyEvents(full, EVENTS[2]);
    expect(after.items).toHaveLength(full.items.length);
    after.items.forEach((item, i) => expect(item).toBe(full.items[i]));
    expect(after.running).toBe(false);
    expect(after.finishReason).toBe('answer');
  });

  it('updates the labels of the view and its trace', () => {
    const view = withLabels(fromTrace(TRACE), { rating: 'down', note: 'wrong' });
    expect(view.labels).toEqual({ rating: 'down', note: 'wrong' });
    expect(view.trace?.labels).toEqual({ rating: 'down', note: 'wrong' });
  });
});

describe('formatDuration', () => {
  it('reads like a person would write it', () => {
    expect(formatDuration(0.4213)).toBe('0.42 s');
    expect(formatDuration(12.34)).toBe('12.3 s');
    expect(formatDuration(125)).toBe('2 min 5 s');
    expect(formatDuration(null)).toBe('');
  });
});
