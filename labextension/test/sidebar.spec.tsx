import { fireEvent, render, screen } from '@testing-library/react';
import * as React from 'react';
import { describe, expect, it, vi } from 'vitest';

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

function fakeConnection(traces: NotebookTraces): any {
  return {
    traces,
    changed: traces.changed,
    panel: { title: { label: 'analysis.ipynb' }, context: { path: 'analysis.ipynb' } },
    sessionContext: { kernelDisplayStatus: 'idle' }
  };
}

function fakeActions(): ISidebarActions & { [name: string]: any } {
  return {
    stop: vi.fn(async () => undefined),
    insertCells: vi.fn(async () => 3),
    copyAnswer: vi.fn(),
    exportTraces: vi.fn(),
    saveLabels: vi.fn(async (_view, labels) => labels)
  };
}

function renderSidebar(traces: NotebookTraces, actions: ISidebarActions): void {
  render(
    <Sidebar
      connection={fakeConnection(traces)}
      services={services}
      showThinking={true}
      actions={actions}
    />
  );
}

describe('Sidebar', () => {
  it('asks for a notebook when none is open', () => {
    render(
      <Sidebar connection={null} services={services} showThinking={true} actions={fakeActions()} />
    );
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
});
