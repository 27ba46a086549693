/**
 * Feeds one notebook's traces from its kernel: the `kernel_bridge.trace` comm (one comm per run,
 * events in batches) and the trace bundle each run displays last (the whole trace, with token
 * counts). The comm target is registered again whenever the kernel changes or restarts, so the
 * sidebar keeps working across kernel restarts.
 */
import { ISessionContext } from '@jupyterlab/apputils';
import { NotebookPanel } from '@jupyterlab/notebook';
import { Kernel, KernelMessage } from '@jupyterlab/services';
import { IDisposable } from '@lumino/disposable';
import { ISignal, Signal } from '@lumino/signaling';

import { allTraces, NotebookTraces } from './model';
import { applyEvents, closeTrace, completeTrace, fromTrace, openTrace } from './reducer';
import { bundleId, readTraceBundle } from './bundle';
import { COMM_TARGET, CommEvent, ICommOpenData, TRACE_MIME } from './types';

export class NotebookConnection implements IDisposable {
  constructor(
    readonly panel: NotebookPanel,
    readonly traces: NotebookTraces,
    private readonly onKernelReady: (kernel: Kernel.IKernelConnection) => void = () => undefined
  ) {
    const context = panel.sessionContext;
    context.kernelChanged.connect(this._onKernelChanged, this);
    context.statusChanged.connect(this._onStatus, this);
    context.iopubMessage.connect(this._onIOPub, this);
    traces.changed.connect(this._emit, this);
    allTraces.add(traces);
    panel.title.changed.connect(this._emit, this);
    this._register(context.session?.kernel ?? null);
    void panel.context.ready.then(() => this._readSavedTraces());
  }

  /** The traces, the kernel's status or the notebook's name changed. */
  get changed(): ISignal<this, void> {
    return this._changed;
  }

  get isDisposed(): boolean {
    return this._disposed;
  }

  get sessionContext(): ISessionContext {
    return this.panel.sessionContext;
  }

  get kernel(): Kernel.IKernelConnection | null {
    return this.panel.sessionContext.session?.kernel ?? null;
  }

  dispose(): void {
    if (this._disposed) {
      return;
    }
    this._disposed = true;
    const context = this.panel.sessionContext;
    context.kernelChanged.disconnect(this._onKernelChanged, this);
    context.statusChanged.disconnect(this._onStatus, this);
    context.iopubMessage.disconnect(this._onIOPub, this);
    this.traces.changed.disconnect(this._emit, this);
    allTraces.remove(this.traces);
    this.panel.title.changed.disconnect(this._emit, this);
    if (this._kernel && !this._kernel.isDisposed) {
      this._kernel.removeCommTarget(COMM_TARGET, this._onComm);
    }
  }

  private _onKernelChanged(
    _: ISessionContext,
    change: { oldValue: Kernel.IKernelConnection | null; newValue: Kernel.IKernelConnection | null }
  ): void {
    if (change.oldValue && !change.oldValue.isDisposed) {
      change.oldValue.removeCommTarget(COMM_TARGET, this._onComm);
    }
    this._register(change.newValue);
  }

  private _emit(): void {
    this._changed.emit();
  }

  private _onStatus(_: ISessionContext, status: Kernel.Status): void {
    this._changed.emit();
    if (status === 'restarting' || status === 'autorestarting' || status === 'dead') {
      // The run's comm will not close by itself: end the live run where it stands.
      const live = this.traces.live;
      if (live) {
        this.traces.put(closeTrace(live));
      }
      this._restarted = true;
    } else if (status === 'idle' && this._restarted) {
      this._restarted = false;
      this._register(this.kernel); // a restarted kernel: register again (idempotent)
    }
  }

  private _register(kernel: Kernel.IKernelConnection | null): void {
    this._kernel = kernel;
    if (!kernel) {
      return;
    }
    kernel.registerCommTarget(COMM_TARGET, this._onComm);
    void kernel.info
      .then(info => {
        if (info.language_info?.name === 'python' && !this._disposed) {
          this.onKernelReady(kernel);
        }
      })
      .catch(() => undefined);
  }

  private _onComm = (comm: Kernel.IComm, msg: KernelMessage.ICommOpenMsg): void => {
    const data = msg.content.data as unknown as ICommOpenData;
    const id = data.trace_id;
    this.traces.put(openTrace(data));
    comm.onMsg = (message: KernelMessage.ICommMsgMsg) => {
      const events = (message.content.data as any)?.events as CommEvent[] | undefined;
      if (events?.length) {
        this.traces.update(id, view => applyEvents(view, events));
      }
    };
    comm.onClose = () => {
      this.traces.update(id, closeTrace);
    };
  };

  private _onIOPub(_: ISessionContext, msg: KernelMessage.IMessage): void {
    const type = msg.header.msg_type;
    if (type !== 'display_data' && type !== 'execute_result') {
      return;
    }
    const content = msg.content as KernelMessage.IDisplayDataMsg['content'];
    if (!bundleId(content.data?.[TRACE_MIME])) {
      return;
    }
    const meta = content.metadata?.[TRACE_MIME] as { trace_path?: string } | undefined;
    void this._putBundle(content.data[TRACE_MIME], meta?.trace_path ?? null);
  }

  /** A finished run's bundle joins the history, completing the live trace of the same id. */
  private async _putBundle(bundle: unknown, path: string | null): Promise<void> {
    const trace = await readTraceBundle(bundle);
    if (!trace || this._disposed) {
      return;
    }
    const known = this.traces.get(trace.id);
    this.traces.put(known ? completeTrace(known, trace, path) : fromTrace(trace, path));
  }

  /** Traces already in the notebook's outputs (a saved notebook reopened) join the history. */
  private _readSavedTraces(): void {
    const cells = this.panel.content.model?.cells;
    if (!cells) {
      return;
    }
    for (let i = 0; i < cells.length; i++) {
      const cell = cells.get(i).toJSON() as any;
      for (const output of cell.outputs ?? []) {
        const id = bundleId(output.data?.[TRACE_MIME]);
        if (id && !this.traces.get(id)) {
          void this._putBundle(
            output.data[TRACE_MIME],
            output.metadata?.[TRACE_MIME]?.trace_path ?? null
          );
        }
      }
    }
  }

  private _kernel: Kernel.IKernelConnection | null = null;
  private _changed = new Signal<this, void>(this);
  private _disposed = false;
  private _restarted = false;
}
