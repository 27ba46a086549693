import { fireEvent, render, screen } from '@testing-library/react';
import * as React from 'react';
import { describe, expect, it, vi } from 'vitest';

import { IAskOptions, reasonSource, shellWord } from '../src/askbox';
import { NotebookTraces } from '../src/model';
import { applyEvents, fromTrace, openTrace } from '../src/reducer';
import { ISidebarActions, Sidebar, tracesToJSONL } from '../src/sidebar';
import { IRenderServices } from '../src/traceview';
import { EVENTS, OPEN, TRACE } from './fixtures';

const services: IRenderServices = {
  renderOutputs: () => () => undefined,
  highlight: (code, host) => {
    host.textContent = code;
  },
  renderMarkdown: (text, host) => {
    host.textContent = text;
    return () => undefined;
  }
};

function fakeConnection(traces: NotebookTraces, name = 'analysis.ipynb'): any {
  return {
    traces,
    changed: traces.changed,
    panel: { id: `panel-${name}`, title: { label: name }, context: { path: name } },
    sessionContext: { kernelDisplayStatus: 'idle' }
  };
}

const ASK_DEFAULTS: IAskOptions = { model: '', isolated: false, maxSteps: null };

function fakeActions(): ISidebarActions & { [name: string]: any } {
  return {
    stop: vi.fn(async () => undefined),
    insertCells: vi.fn(async () => 3),
    copyAnswer: vi.fn(),
    exportTraces: vi.fn(),
    saveLabels: vi.fn(async (_view, labels) => labels),
    ask: vi.fn(async () => 'Asked in cell 2')
  };
}

function sidebar(
  connection: any,
  actions: ISidebarActions,
  askDefaults: IAskOptions = ASK_DEFAULTS
): JSX.Element {
  return (
    <Sidebar
      connection={connection}
      services={services}
      showThinking={true}
      actions={actions}
      askDefaults={askDefaults}
      defaultMaxSteps={20}
    />
  );
}

function renderSidebar(traces: NotebookTraces, actions: ISidebarActions) {
  return render(sidebar(fakeConnection(traces), actions));
}

describe('Sidebar', () => {
  it('asks for a notebook when none is open', () => {
    render(sidebar(null, fakeActions()));
    expect(screen.getByText(/Open a notebook/)).toBeTruthy();
  });

  it('shows a live run with Stop enabled, and follows it as events arrive', () => {
    const traces = new NotebookTraces();
    const actions = fakeActions();
    renderSidebar(traces, actions);
    React.act(() => traces.put(applyEvents(openTrace(OPEN), EVENTS[0])));
    const stop = screen.getByRole('button', { name: 'Stop the run' }) as HTMLButtonElement;
    expect(stop.disabled).toBe(false);
    expect(
      (screen.getByRole('button', { name: 'Insert as cells' }) as HTMLButtonElement).disabled
    ).toBe(true);
    fireEvent.click(stop);
    expect(actions.stop).toHaveBeenCalled();
    React.act(() => traces.update('run1', view => applyEvents(view, EVENTS.slice(1).flat())));
    expect(stop.disabled).toBe(true);
    expect(screen.getByRole('group', { name: 'Answer' }).textContent).toContain('328');
  });

  it('shows a run whose model loads at once, not the previous run, with Stop enabled', () => {
    const traces = new NotebookTraces();
    traces.put(fromTrace(TRACE, '/tmp/t.jsonl')); // the previous run, finished
    const actions = fakeActions();
    renderSidebar(traces, actions);
    const open = { ...OPEN, trace_id: 'cold', model: 'local', question: 'Cold start?' };
    React.act(() =>
      traces.put(
        applyEvents(openTrace(open), [
          {
            type: 'loading',
            stage: 'converting',
            message: 'Converting the embedded model (first time only, up to 2 min)…',
            fraction: 0.25
          }
        ])
      )
    );
    const status = screen.getByRole('status', { name: 'Model loading' });
    expect(status.textContent).toContain('Converting the embedded model (first time only');
    expect(status.textContent).toContain('25%');
    const bar = status.querySelector('progress') as HTMLProgressElement;
    expect(bar.getAttribute('value')).toBe('0.25');
    const stop = screen.getByRole('button', { name: 'Stop the run' }) as HTMLButtonElement;
    expect(stop.disabled).toBe(false);
    fireEvent.click(stop);
    expect(actions.stop).toHaveBeenCalled();
    // Loading, with no share known yet: an indeterminate bar.
    React.act(() =>
      traces.update('cold', view =>
        applyEvents(view, [
          {
            type: 'loading',
            stage: 'loading',
            message: 'Loading the embedded model…',
            fraction: null
          }
        ])
      )
    );
    expect(screen.getByRole('status', { name: 'Model loading' }).textContent).toBe(
      'Loading the embedded model…'
    );
    expect(
      screen
        .getByRole('status', { name: 'Model loading' })
        .querySelector('progress')
        ?.hasAttribute('value')
    ).toBe(false);
    // Loaded: the banner goes and the run shows as it streams.
    React.act(() =>
      traces.update('cold', view =>
        applyEvents(view, [
          { type: 'loading', stage: 'ready', message: 'Loaded in 9.0 s', fraction: 1 },
          ...EVENTS[0]
        ])
      )
    );
    expect(screen.queryByRole('status', { name: 'Model loading' })).toBeNull();
    expect(stop.disabled).toBe(false);
  });

  it('ends a run stopped while its model loads as interrupted', () => {
    const traces = new NotebookTraces();
    renderSidebar(traces, fakeActions());
    const open = { ...OPEN, trace_id: 'cold' };
    React.act(() =>
      traces.put(
        applyEvents(openTrace(open), [
          { type: 'loading', stage: 'loading', message: 'Loading model local…', fraction: null }
        ])
      )
    );
    React.act(() =>
      traces.update('cold', view =>
        applyEvents(view, [
          {
            type: 'finished',
            trace_id: 'cold',
            finish_reason: 'interrupted',
            answer: null,
            error: "interrupted while loading model 'local'",
            trace_path: '/tmp/t.jsonl'
          }
        ])
      )
    );
    expect(screen.queryByRole('status', { name: 'Model loading' })).toBeNull();
    expect(
      (screen.getByRole('button', { name: 'Stop the run' }) as HTMLButtonElement).disabled
    ).toBe(true);
    expect(traces.selected?.finishReason).toBe('interrupted');
  });

  it('saves a 👍 with a note through the labels action', async () => {
    const traces = new NotebookTraces();
    traces.put(fromTrace({ ...TRACE, labels: {} }, '/tmp/t.jsonl'));
    const actions = fakeActions();
    renderSidebar(traces, actions);
    fireEvent.change(screen.getByRole('textbox', { name: 'Note on this trace' }), {
      target: { value: 'clean reasoning' }
    });
    await React.act(async () => {
      fireEvent.click(screen.getByRole('button', { name: 'Good trace' }));
    });
    expect(actions.saveLabels).toHaveBeenCalledWith(expect.objectContaining({ id: TRACE.id }), {
      rating: 'up',
      note: 'clean reasoning'
    });
    expect(traces.selected?.labels).toEqual({ rating: 'up', note: 'clean reasoning' });
    expect(screen.getByRole('button', { name: 'Good trace' }).getAttribute('aria-pressed')).toBe(
      'true'
    );
    expect(screen.getByText('Feedback saved in the trace')).toBeTruthy();
  });

  it('lists the history and shows the trace picked from it', () => {
    const traces = new NotebookTraces();
    traces.put(fromTrace(TRACE, '/tmp/t.jsonl'));
    traces.put(
      fromTrace({
        ...TRACE,
        id: 'second',
        labels: {},
        messages: [{ role: 'user', content: 'Second question' }]
      })
    );
    renderSidebar(traces, fakeActions());
    const items = screen
      .getAllByRole('listitem')
      .filter(li => li.querySelector('.kb-History-item'));
    expect(items.map(li => li.textContent)).toEqual(['Second question', 'What is 2 + 2?👍']);
    fireEvent.click(screen.getByRole('button', { name: /What is 2 \+ 2\?/ }));
    expect(traces.selected?.id).toBe(TRACE.id);
  });

  it('exports traces as JSONL with their labels', () => {
    const view = { ...fromTrace(TRACE), labels: { rating: 'down' as const } };
    const lines = tracesToJSONL([view, openTrace(OPEN)]).split('\n');
    expect(lines).toHaveLength(2); // one trace (the open run has no trace yet) + final newline
    expect(JSON.parse(lines[0])).toMatchObject({ id: TRACE.id, labels: { rating: 'down' } });
  });

  it('keeps one feedback row, of the selected trace, as the selection changes', () => {
    const traces = new NotebookTraces();
    traces.put(fromTrace({ ...TRACE, id: 'first', labels: { rating: 'up' } }, '/tmp/t.jsonl'));
    traces.put(fromTrace({ ...TRACE, id: 'second', labels: {} }, '/tmp/t.jsonl'));
    const { container } = renderSidebar(traces, fakeActions());
    fireEvent.change(screen.getByRole('textbox', { name: 'Note on this trace' }), {
      target: { value: 'typed for the second' }
    });
    for (const id of ['first', 'second', 'first', 'second', 'first']) {
      React.act(() => traces.select(id));
    }
    expect(container.querySelectorAll('.kb-Feedback')).toHaveLength(1);
    expect(container.querySelectorAll('.kb-Trace')).toHaveLength(1);
    // The row is the first trace's: its 👍, and no note typed for another trace.
    expect(screen.getByRole('button', { name: 'Good trace' }).getAttribute('aria-pressed')).toBe(
      'true'
    );
    expect(
      (screen.getByRole('textbox', { name: 'Note on this trace' }) as HTMLInputElement).value
    ).toBe('');
  });

  it('keeps a note typed in one notebook out of another notebook with the same trace', () => {
    const view = fromTrace({ ...TRACE, labels: {} }, '/tmp/t.jsonl');
    const first = new NotebookTraces();
    const second = new NotebookTraces();
    first.put(view);
    second.put(view);
    const actions = fakeActions();
    const { container, rerender } = render(sidebar(fakeConnection(first, 'a.ipynb'), actions));
    fireEvent.change(screen.getByRole('textbox', { name: 'Note on this trace' }), {
      target: { value: 'typed in a.ipynb' }
    });
    rerender(sidebar(fakeConnection(second, 'b.ipynb'), actions));
    expect(container.querySelectorAll('.kb-Feedback')).toHaveLength(1);
    expect(
      (screen.getByRole('textbox', { name: 'Note on this trace' }) as HTMLInputElement).value
    ).toBe('');
  });

  it('says "Stop sent" only until the run ends, and not during the next run', async () => {
    const traces = new NotebookTraces();
    renderSidebar(traces, fakeActions());
    React.act(() => traces.put(applyEvents(openTrace(OPEN), EVENTS[0])));
    await React.act(async () => {
      fireEvent.click(screen.getByRole('button', { name: 'Stop the run' }));
    });
    expect(screen.getByText(/Stop sent/)).toBeTruthy();
    React.act(() => traces.update('run1', view => applyEvents(view, EVENTS.slice(1).flat())));
    expect(screen.queryByText(/Stop sent/)).toBeNull();
    React.act(() => traces.put(applyEvents(openTrace({ ...OPEN, trace_id: 'run2' }), EVENTS[0])));
    expect(screen.queryByText(/Stop sent/)).toBeNull();
  });
});

describe('the ask box', () => {
  it('asks on Enter with the question and the options, then clears the box', async () => {
    const traces = new NotebookTraces();
    const actions = fakeActions();
    render(
      sidebar(fakeConnection(traces), actions, {
        model: 'scripted:a.txt',
        isolated: true,
        maxSteps: null
      })
    );
    const box = screen.getByRole('textbox', { name: 'Question' }) as HTMLTextAreaElement;
    fireEvent.change(box, { target: { value: 'What is 2**100?' } });
    fireEvent.keyDown(box, { key: 'Enter', shiftKey: true }); // a new line, not a question
    expect(actions.ask).not.toHaveBeenCalled();
    fireEvent.change(screen.getByRole('spinbutton', { name: 'Max steps' }), {
      target: { value: '5' }
    });
    await React.act(async () => {
      fireEvent.keyDown(box, { key: 'Enter' });
    });
    expect(actions.ask).toHaveBeenCalledWith('What is 2**100?', {
      model: 'scripted:a.txt',
      isolated: true,
      maxSteps: 5
    });
    expect(box.value).toBe('');
    expect(screen.getByText('Asked in cell 2')).toBeTruthy();
    // The run it started makes the message stale, also once the run has ended.
    React.act(() => traces.put(applyEvents(openTrace(OPEN), EVENTS[0])));
    expect(screen.queryByText('Asked in cell 2')).toBeNull();
    React.act(() => traces.update('run1', view => applyEvents(view, EVENTS.slice(1).flat())));
    expect(screen.queryByText('Asked in cell 2')).toBeNull();
  });

  it('keeps the question when the ask fails, and says why', async () => {
    const traces = new NotebookTraces();
    const actions = fakeActions();
    actions.ask = vi.fn(async () => {
      throw new Error('the notebook is not loaded yet');
    });
    renderSidebar(traces, actions);
    const box = screen.getByRole('textbox', { name: 'Question' }) as HTMLTextAreaElement;
    fireEvent.change(box, { target: { value: 'Why?' } });
    await React.act(async () => {
      fireEvent.click(screen.getByRole('button', { name: 'Ask' }));
    });
    expect(box.value).toBe('Why?');
    expect(screen.getByText(/not loaded yet/)).toBeTruthy();
  });

  it('writes the %%reason cell: options that differ from the kernel defaults, then the question', () => {
    expect(reasonSource('  What is 2**100?\n', ASK_DEFAULTS)).toBe('%%reason\nWhat is 2**100?');
    expect(
      reasonSource('Plot it\nnicely', { model: 'openai/gpt-4o', isolated: true, maxSteps: 5 })
    ).toBe('%%reason --model openai/gpt-4o --isolated --max-steps 5\nPlot it\nnicely');
    expect(shellWord('scripted:/tmp/my scripts/a.txt')).toBe("'scripted:/tmp/my scripts/a.txt'");
    expect(shellWord("it's")).toBe(`'it'"'"'s'`);
  });
});
