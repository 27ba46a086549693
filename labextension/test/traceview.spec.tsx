import { act, fireEvent, render, screen } from '@testing-library/react';
import * as React from 'react';
import { afterEach, describe, expect, it, vi } from 'vitest';

import { applyEvents, fromTrace, openTrace } from '../src/reducer';
import { TraceView } from '../src/traceview';
import { EVENTS, fakeServices, longTrace, OPEN, TRACE } from './fixtures';

describe('TraceView', () => {
  it('shows the thinking, each step with status and time, outputs, and the answer', () => {
    const view = EVENTS.reduce((v, e) => applyEvents(v, e), openTrace(OPEN));
    const { container } = render(
      <TraceView view={view} services={fakeServices()} showThinking={true} />
    );
    const steps = container.querySelectorAll('.kb-Step');
    expect(steps).toHaveLength(2);
    expect(steps[0].getAttribute('data-status')).toBe('ok');
    expect(steps[0].textContent).toContain('Step 1');
    expect(steps[0].textContent).toContain('0.01 s');
    expect(steps[0].querySelector('.kb-Code')?.textContent).toContain('print(len(primes))');
    expect(steps[0].querySelector('.kb-Outputs')?.textContent).toBe('15\n');
    expect(screen.getByRole('group', { name: 'Answer' }).textContent).toContain('sum to **328**');
    expect(container.textContent).toContain('I will find the primes');
    // The streamed answer text is not shown twice once the answer is known.
    expect(container.querySelectorAll('.kb-Text-answer')).toHaveLength(0);
  });

  it('shows token counts and the total time of a saved trace', () => {
    render(<TraceView view={fromTrace(TRACE)} services={fakeServices()} showThinking={true} />);
    expect(screen.getByText(/38 model · 9 tool · 14 prompt tokens/)).toBeTruthy();
    expect(screen.getByText('1.90 s')).toBeTruthy();
    expect(screen.getByRole('status').textContent).toBe('answered');
  });

  it('says that a run ended without an answer', () => {
    const view = fromTrace({ ...TRACE, answer: null, finish_reason: 'no_answer' });
    const { container } = render(
      <TraceView view={view} services={fakeServices()} showThinking={true} />
    );
    expect(screen.getByRole('status').textContent).toBe('no answer');
    expect(container.querySelector('.kb-Badge-no_answer')).toBeTruthy();
    expect(screen.queryByRole('group', { name: 'Answer' })).toBeNull();
  });

  it('collapses and expands thinking with an accessible toggle', () => {
    const { container } = render(
      <TraceView view={fromTrace(TRACE)} services={fakeServices()} showThinking={false} />
    );
    const toggle = container.querySelector('.kb-Think-toggle') as HTMLButtonElement;
    expect(toggle.getAttribute('aria-expanded')).toBe('false');
    expect(container.querySelector('.kb-Think-body')).toBeNull();
    fireEvent.click(toggle);
    expect(toggle.getAttribute('aria-expanded')).toBe('true');
    expect(container.querySelector('.kb-Think-body')?.textContent).toBe('Compute it.');
  });

  it('shows a running step as running, live', () => {
    const view = applyEvents(openTrace(OPEN), EVENTS[0]);
    const { container } = render(
      <TraceView view={view} services={fakeServices()} showThinking={true} follow={true} />
    );
    expect(container.querySelector('.kb-Step')?.getAttribute('data-status')).toBe('running');
    expect(screen.getByRole('status').textContent).toBe('running…');
  });

  it('virtualizes a 1,000-step trace: far fewer than 1,000 step nodes', () => {
    const services = fakeServices();
    const { container } = render(
      <TraceView view={fromTrace(longTrace(1000))} services={services} showThinking={true} />
    );
    const steps = container.querySelectorAll('.kb-Step').length;
    expect(steps).toBeGreaterThan(0);
    expect(steps).toBeLessThan(50);
    expect(container.querySelectorAll('[role="listitem"]').length).toBeLessThan(60);
    expect(services.outputs.length).toBeLessThan(50);
    // The list is as tall as all rows together, so the scrollbar is right.
    const rows = container.querySelector('.kb-Trace-rows') as HTMLElement;
    expect(parseInt(rows.style.height, 10)).toBeGreaterThan(1000 * 50);
  });

  it('updates one step in place as its events arrive', () => {
    const services = fakeServices();
    let view = applyEvents(openTrace(OPEN), EVENTS[0]);
    const { container, rerender } = render(
      <TraceView view={view} services={services} showThinking={true} />
    );
    const before = container.querySelector('.kb-Step');
    view = applyEvents(view, EVENTS[1]);
    act(() => rerender(<TraceView view={view} services={services} showThinking={true} />));
    const after = container.querySelector('.kb-Step');
    expect(after).toBe(before); // same DOM node: no remount, no jump
    expect(after?.getAttribute('data-status')).toBe('ok');
  });
});

/**
 * A browser's layout for one test: a ResizeObserver the test fires, and sizes that are 0 while
 * `hidden` (as under a `display: none` tab); the renderer's viewport is as tall as its style says.
 */
function fakeLayout() {
  const observers: { cb: ResizeObserverCallback; targets: Set<Element> }[] = [];
  const layout = { hidden: false };
  class FakeResizeObserver {
    private entry: { cb: ResizeObserverCallback; targets: Set<Element> };
    constructor(cb: ResizeObserverCallback) {
      this.entry = { cb, targets: new Set() };
      observers.push(this.entry);
    }
    observe(target: Element) {
      this.entry.targets.add(target);
    }
    unobserve(target: Element) {
      this.entry.targets.delete(target);
    }
    disconnect() {
      this.entry.targets.clear();
    }
  }
  vi.stubGlobal('ResizeObserver', FakeResizeObserver);
  const height = (el: HTMLElement) => {
    if (layout.hidden) {
      return 0;
    }
    if (el.classList.contains('kb-Trace-scroll')) {
      return el.style.height ? parseFloat(el.style.height) : 600;
    }
    return el.classList.contains('kb-Trace-row') ? 80 : 0;
  };
  const define = (name: string, of: (el: HTMLElement) => number) =>
    vi.spyOn(HTMLElement.prototype, name as 'clientHeight', 'get').mockImplementation(function (
      this: HTMLElement
    ) {
      return of(this);
    });
  define('clientHeight', height);
  define('offsetHeight', height);
  define('clientWidth', el =>
    !layout.hidden && el.classList.contains('kb-Trace-scroll') ? 320 : 0
  );
  /** What a browser does on a layout change: tell every observer about its targets' sizes. */
  const relayout = () =>
    act(() => {
      for (const { cb, targets } of observers) {
        const entries = [...targets].map(target => {
          const size = height(target as HTMLElement);
          return {
            target,
            borderBoxSize: [{ blockSize: size, inlineSize: layout.hidden ? 0 : 320 }],
            contentRect: { width: layout.hidden ? 0 : 320, height: size }
          } as unknown as ResizeObserverEntry;
        });
        if (entries.length) {
          cb(entries, {} as ResizeObserver);
        }
      }
    });
  return { layout, relayout };
}

describe('TraceView in a tab that is hidden and shown again', () => {
  afterEach(() => {
    vi.unstubAllGlobals();
    vi.restoreAllMocks();
  });

  it('keeps its rows and height through a hidden tab (0 px measured)', () => {
    const { layout, relayout } = fakeLayout();
    const { container } = render(
      <TraceView
        view={fromTrace(longTrace(5))}
        services={fakeServices()}
        showThinking={true}
        initialHeight={560}
        maxHeight={560}
      />
    );
    relayout();
    const scroll = container.querySelector('.kb-Trace-scroll') as HTMLElement;
    const shown = parseFloat(scroll.style.height);
    expect(shown).toBeGreaterThan(300);
    expect(container.querySelectorAll('.kb-Step')).toHaveLength(5);

    layout.hidden = true; // another notebook tab is activated
    relayout();
    layout.hidden = false; // and this one again
    relayout();
    expect(parseFloat(scroll.style.height)).toBe(shown);
    expect(container.querySelectorAll('.kb-Step')).toHaveLength(5);
    expect(screen.getByRole('group', { name: 'Answer' })).toBeTruthy();
  });
});

describe('module', () => {
  it('exports the view', () => {
    expect(typeof TraceView).toBe('function');
    expect(vi).toBeTruthy();
  });
});
