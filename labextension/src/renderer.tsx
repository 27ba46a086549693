/**
 * The renderer of `application/vnd.kernel-bridge.trace+json`, the bundle a `%%reason` run
 * displays last (packed: ./bundle.ts): the whole trace, drawn by the same view as the sidebar. It is what a saved
 * notebook shows when it is opened again.
 */
import { IRenderMime } from '@jupyterlab/rendermime-interfaces';
import { Widget } from '@lumino/widgets';
import * as React from 'react';
import { createRoot, Root } from 'react-dom/client';

import { readTraceBundle } from './bundle';
import { fromTrace } from './reducer';
import { IRenderServices, TraceView } from './traceview';
import { TRACE_MIME } from './types';

export class TraceRenderer extends Widget implements IRenderMime.IRenderer {
  constructor(
    private readonly services: (trusted: boolean) => IRenderServices,
    private readonly showThinking: () => boolean
  ) {
    super();
    this.addClass('kb-TraceRenderer');
  }

  async renderModel(model: IRenderMime.IMimeModel): Promise<void> {
    const data = await readTraceBundle(model.data[TRACE_MIME]);
    const meta = model.metadata[TRACE_MIME] as { trace_path?: string } | undefined;
    if (this.isDisposed) {
      return; // the output went while the trace was unpacked
    }
    if (!data) {
      this.node.textContent = 'kernel-bridge: this output holds no readable trace';
      return;
    }
    const view = fromTrace(data, meta?.trace_path ?? null);
    this._root = this._root ?? createRoot(this.node);
    this._root.render(
      <TraceView
        view={view}
        services={this.services(model.trusted)}
        showThinking={this.showThinking()}
        initialHeight={560}
        maxHeight={560}
      />
    );
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    const root = this._root;
    this._root = null;
    // Unmount after the current render pass (React warns on a synchronous unmount in one).
    setTimeout(() => root?.unmount(), 0);
    super.dispose();
  }

  private _root: Root | null = null;
}

/** The factory the renderer plugin adds to the rendermime registry. */
export function traceRendererFactory(
  services: (trusted: boolean) => IRenderServices,
  showThinking: () => boolean
): IRenderMime.IRendererFactory {
  return {
    safe: true,
    mimeTypes: [TRACE_MIME],
    defaultRank: 50,
    createRenderer: () => new TraceRenderer(services, showThinking)
  };
}
