/**
 * The traces of one notebook: the run in progress and the history of this session, in order.
 * The sidebar draws the active notebook's; a connection (connection.ts) feeds it.
 */
import { ISignal, Signal } from '@lumino/signaling';

import { ITraceView } from './types';

export class NotebookTraces {
  /** Newest last. */
  get traces(): readonly ITraceView[] {
    return this._traces;
  }

  /** The trace the sidebar shows: the one picked in the history, else the newest. */
  get selected(): ITraceView | null {
    const picked = this._selectedId && this.get(this._selectedId);
    return picked || this._traces[this._traces.length - 1] || null;
  }

  /** The run in progress, if any. */
  get live(): ITraceView | null {
    return this._traces.find(trace => trace.running) ?? null;
  }

  get changed(): ISignal<this, void> {
    return this._changed;
  }

  get(id: string): ITraceView | undefined {
    return this._traces.find(trace => trace.id === id);
  }

  /** Add a trace, or replace the one with its id; a new live run becomes the selection. */
  put(view: ITraceView): void {
    const at = this._traces.findIndex(trace => trace.id === view.id);
    if (at >= 0) {
      this._traces = [...this._traces.slice(0, at), view, ...this._traces.slice(at + 1)];
    } else {
      this._traces = [...this._traces, view];
      if (view.running) {
        this._selectedId = null; // follow the new run
      }
    }
    this._changed.emit();
  }

  /** Change the trace with this id, if it is here. */
  update(id: string, change: (view: ITraceView) => ITraceView): void {
    const view = this.get(id);
    if (view) {
      this.put(change(view));
    }
  }

  /** Show this trace (null: follow the newest). */
  select(id: string | null): void {
    this._selectedId = id;
    this._changed.emit();
  }

  private _traces: ITraceView[] = [];
  private _selectedId: string | null = null;
  private _changed = new Signal<this, void>(this);
}

/**
 * Every open notebook's traces, found by id. A running cell whose kernel knows the extension is
 * attached holds only a live bundle (bundle.ts); its renderer draws the run from here, from the
 * same events the sidebar reads.
 */
export class AllTraces {
  /** One of the notebooks' traces changed. */
  get changed(): ISignal<this, void> {
    return this._changed;
  }

  add(traces: NotebookTraces): void {
    this._all.add(traces);
    traces.changed.connect(this._emit, this);
  }

  remove(traces: NotebookTraces): void {
    this._all.delete(traces);
    traces.changed.disconnect(this._emit, this);
  }

  get(id: string): ITraceView | undefined {
    for (const traces of this._all) {
      const view = traces.get(id);
      if (view) {
        return view;
      }
    }
    return undefined;
  }

  private _emit(): void {
    this._changed.emit();
  }

  private _all = new Set<NotebookTraces>();
  private _changed = new Signal<this, void>(this);
}

/** The one registry the notebooks' connections join and the trace renderer reads. */
export const allTraces = new AllTraces();
