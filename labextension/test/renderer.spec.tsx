import { act, waitFor } from '@testing-library/react';
import { describe, expect, it } from 'vitest';

import { AllTraces, NotebookTraces } from '../src/model';
import { applyEvents, openTrace } from '../src/reducer';
import { TraceRenderer } from '../src/renderer';
import { TRACE_MIME } from '../src/types';
import { BUNDLE, EVENTS, fakeServices, OPEN } from './fixtures';

function renderer(all: AllTraces): TraceRenderer {
  const widget = new TraceRenderer(
    () => fakeServices(),
    () => true,
    all
  );
  document.body.appendChild(widget.node);
  return widget;
}

function model(bundle: unknown): any {
  return {
    data: { [TRACE_MIME]: bundle },
    metadata: { [TRACE_MIME]: { trace_path: '/tmp/traces.jsonl' } },
    trusted: true
  };
}

describe('the trace renderer', () => {
  it('draws a running cell from the live events of its notebook and follows them', async () => {
    const all = new AllTraces();
    const traces = new NotebookTraces();
    all.add(traces);
    traces.put(openTrace(OPEN));
    const widget = renderer(all);
    await act(() => widget.renderModel(model({ id: OPEN.trace_id, live: true })));
    await waitFor(() => expect(widget.node.querySelector('.kb-Trace')).toBeTruthy());
    expect(widget.node.querySelectorAll('.kb-Step')).toHaveLength(0);
    // The events the sidebar reads reach the cell too: no copy of the run in the cell's output.
    act(() => {
      for (const batch of EVENTS) {
        traces.update(OPEN.trace_id, view => applyEvents(view, batch));
      }
    });
    await waitFor(() => expect(widget.node.querySelectorAll('.kb-Step')).toHaveLength(2));
    expect(widget.node.textContent).toContain('print(len(primes))');
    widget.dispose();
  });

  it('says where the trace is when the live run is not in this page', async () => {
    const widget = renderer(new AllTraces());
    await act(() => widget.renderModel(model({ id: 'f00d', live: true })));
    await waitFor(() => expect(widget.node.textContent).toContain('had not finished'));
    expect(widget.node.textContent).toContain('f00d is in /tmp/traces.jsonl');
    widget.dispose();
  });

  it('draws a finished cell from its packed bundle', async () => {
    const widget = renderer(new AllTraces());
    await act(() => widget.renderModel(model(BUNDLE)));
    await waitFor(() => expect(widget.node.querySelectorAll('.kb-Step')).toHaveLength(2));
    widget.dispose();
  });
});
