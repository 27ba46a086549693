/**
 * The renderer of `application/vnd.kernel-bridge.trace+json`, the bundle a `%%reason` run
 * displays last (packed: ./bundle.ts): the whole trace, drawn by the same view as the sidebar. It is
 * what a saved notebook shows when it is opened again. While a run goes, a kernel that knows the
 * extension is attached displays a live bundle instead, and the renderer draws that run from the
 * events its notebook's connection has (./model.ts `AllTraces`), following it until the finished
 * bundle takes its place.
 */
import { IRenderMime } from '@jupyterlab/rendermime-interfaces';
import { Widget } from '@lumino/widgets';
import * as React from 'react';
import { createRoot, Root } from 'react-dom/client';

import { liveBundleId, readTraceBundle } from './bundle';
import { AllTraces } from './model';
import { fromTrace } from './reducer';
import { IRenderServices, TraceView } from './traceview';
import { ITraceView, TRACE_MIME } from './types';

export class TraceRenderer extends Widget implements IRenderMime.IRenderer {
  constructor(
    private readonly services: (trusted: boolean) => IRenderServices,
    private readonly showThinking: () => boolean,
    private readonly live: AllTraces
  ) {
    super();
    this.addClass('kb-TraceRenderer');
  }

  async renderModel(model: IRenderMime.IMimeModel): Promise<void> {
    const bundle = model.data[TRACE_MIME];
    const meta = model.metadata[TRACE_MIME] as { trace_path?: string } | undefined;
    const path = meta?.trace_path ?? null;
    this._unfollow();
    const liveId = liveBundleId(bundle);
    if (liveId) {
      this._follow(liveId, path, model.trusted);
      return;
    }
    const data = await readTraceBundle(bundle);
    if (this.isDisposed) {
      return; // the output went while the trace was unpacked
    }
    if (!data) {
      this._draw(null, 'kernel-bridge: this output holds no readable trace', model.trusted);
      return;
    }
    this._draw(fromTrace(data, path), '', model.trusted);
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this._unfollow();
    const root = this._root;
    this._root = null;
    // Unmount after the current render pass (React warns on a synchronous unmount in one).
    setTimeout(() => root?.unmount(), 0);
    super.dispose();
  }

  /** Draw the live run `id` now and whenever a notebook's traces change. */
  private _follow(id: string, path: string | null, trusted: boolean): void {
    // No run of that id in this page: the page was reloaded while it ran, or the notebook was
    // saved before the run ended (its trace file still has it).
    const gone =
      'kernel-bridge: a run that had not finished when this output was made; ' +
      `its trace ${id} is in ${path ?? 'the trace file'} (kernel-bridge traces show)`;
    const draw = () => {
      const view = this.live.get(id) ?? null;
      if (view !== this._shown) {
        this._draw(view, gone, trusted);
      }
    };
    this._following = draw;
    this.live.changed.connect(draw);
    this._shown = undefined; // draw now, whatever is there
    draw();
  }

  private _unfollow(): void {
    if (this._following) {
      this.live.changed.disconnect(this._following);
      this._following = null;
    }
  }

  /** One trace view, or a line where there is none. */
  private _draw(view: ITraceView | null, note: string, trusted: boolean): void {
    this._shown = view;
    this._root = this._root ?? createRoot(this.node);
    this._root.render(
      view ? (
        <TraceView
          view={view}
          services={this.services(trusted)}
          showThinking={this.showThinking()}
          follow={view.running}
          initialHeight={560}
          maxHeight={560}
        />
      ) : (
        <div className="kb-TraceRenderer-note">{note}</div>
      )
    );
  }

  private _root: Root | null = null;
  private _shown: ITraceView | null | undefined = undefined; // undefined: nothing drawn yet
  private _following: (() => void) | null = null;
}

/** The factory the renderer plugin adds to the rendermime registry. */
export function traceRendererFactory(
  services: (trusted: boolean) => IRenderServices,
  showThinking: () => boolean,
  live: AllTraces
): IRenderMime.IRendererFactory {
  return {
    safe: true,
    mimeTypes: [TRACE_MIME],
    defaultRank: 50,
    createRenderer: () => new TraceRenderer(services, showThinking, live)
  };
}
