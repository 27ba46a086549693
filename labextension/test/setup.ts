/**
 * jsdom does no layout: give the trace's scroll viewport and its rows the sizes a browser would,
 * so the virtualized list decides what to render as it does in JupyterLab.
 */
function size(
  name: 'clientHeight' | 'clientWidth' | 'offsetHeight',
  of: (el: HTMLElement) => number
) {
  Object.defineProperty(HTMLElement.prototype, name, {
    configurable: true,
    get(this: HTMLElement) {
      return of(this);
    }
  });
}

size('clientHeight', el => (el.classList.contains('kb-Trace-scroll') ? 600 : 0));
size('clientWidth', el => (el.classList.contains('kb-Trace-scroll') ? 320 : 0));
size('offsetHeight', el => (el.classList.contains('kb-Trace-row') ? 80 : 0));

// Unmount what each test rendered (vitest runs without globals, so do it here).
import { cleanup } from '@testing-library/react';
import { afterEach } from 'vitest';

afterEach(cleanup);

// jsdom has no DragEvent, which @lumino/dragdrop (imported by @lumino/widgets) subclasses.
if (typeof globalThis.DragEvent === 'undefined') {
  (globalThis as any).DragEvent = class DragEvent extends MouseEvent {};
}
