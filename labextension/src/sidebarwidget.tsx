/**
 * The sidebar widget: follows the active notebook (its `NotebookConnection`) and implements the
 * sidebar's actions with JupyterLab and the kernel.
 */
import { Clipboard } from '@jupyterlab/apputils';
import { ICodeCellModel } from '@jupyterlab/cells';
import { NotebookActions, NotebookPanel } from '@jupyterlab/notebook';
import { Kernel } from '@jupyterlab/services';
import { ReactWidget } from '@jupyterlab/ui-components';
import * as React from 'react';

import { IAskOptions, reasonSource } from './askbox';
import { NotebookConnection } from './connection';
import { saveLabels, traceCells } from './kernelactions';
import { ISidebarActions, Sidebar, tracesToJSONL } from './sidebar';
import { IRenderServices } from './traceview';
import { bundleId } from './bundle';
import { ICellJSON, ILabels, TRACE_MIME } from './types';

/** The sidebar as a widget that follows the active notebook. */
export class TraceSidebar extends ReactWidget {
  constructor(
    private readonly services: IRenderServices,
    private _showThinking: boolean
  ) {
    super();
    this.id = 'kernel-bridge-sidebar';
    this.addClass('kb-SidebarWidget');
    this.title.caption = 'Reasoning traces (kernel-bridge): live runs, history, ask a question';
  }

  get connection(): NotebookConnection | null {
    return this._connection;
  }

  set connection(connection: NotebookConnection | null) {
    if (connection !== this._connection) {
      this._connection = connection;
      this.update();
    }
  }

  set showThinking(value: boolean) {
    this._showThinking = value;
    this.update();
  }

  /** The ask box's options from the settings, and the `--max-steps` the kernel uses without. */
  setAskDefaults(defaults: IAskOptions, defaultMaxSteps: number | null): void {
    this._askDefaults = defaults;
    this._defaultMaxSteps = defaultMaxSteps;
    this.update();
  }

  render(): JSX.Element {
    return (
      <Sidebar
        connection={this._connection}
        services={this.services}
        showThinking={this._showThinking}
        actions={this._actions}
        askDefaults={this._askDefaults}
        defaultMaxSteps={this._defaultMaxSteps}
      />
    );
  }

  private _actions: ISidebarActions = {
    stop: async () => {
      const kernel = this._connection?.kernel;
      if (!kernel) {
        throw new Error('no kernel to stop');
      }
      await kernel.interrupt();
    },
    insertCells: async view => {
      const connection = this._connection;
      const kernel = connection?.kernel;
      let cells: ICellJSON[] | null = view.cells;
      if (!cells) {
        if (!kernel) {
          throw new Error('Insert as cells needs the notebook kernel (it builds the cells)');
        }
        cells = await traceCells(kernel, view.trace, view.tracePath, view.id);
      }
      if (!connection) {
        return 0;
      }
      return insertBelowTrace(connection.panel, view.id, cells);
    },
    copyAnswer: view => {
      if (view.answer) {
        Clipboard.copyToSystem(view.answer);
      }
    },
    exportTraces: views => {
      const text = tracesToJSONL(views);
      const name =
        views.length === 1
          ? `trace-${views[0].id.slice(0, 8)}.jsonl`
          : 'kernel-bridge-traces.jsonl';
      download(text, name);
    },
    saveLabels: async (view, labels) => {
      const kernel = this._connection?.kernel;
      if (!kernel || !view.tracePath) {
        throw new Error('saving feedback needs the notebook kernel and the trace file');
      }
      const saved = await saveLabels(kernel, view.tracePath, view.id, labels, view.trace);
      if (this._connection) {
        setTraceLabels(this._connection.panel, view.id, saved);
      }
      return saved;
    },
    ask: async (question, options) => {
      const connection = this._connection;
      if (!connection) {
        throw new Error('open a notebook to ask in');
      }
      const at = insertReasonCell(connection.panel, reasonSource(question, options));
      const kernel = connection.kernel;
      if (kernel) {
        loadExtension(kernel); // sent first, so the kernel runs it before the cell
      }
      const notebook = connection.panel.content;
      const cell = notebook.widgets[at];
      void NotebookActions.runCells(notebook, [cell], connection.sessionContext);
      void notebook.scrollToItem(at, 'smart');
      return `Asked in cell ${at + 1}`;
    }
  };

  private _connection: NotebookConnection | null = null;
  private _askDefaults: IAskOptions = { model: '', isolated: false, maxSteps: null };
  private _defaultMaxSteps: number | null = null;
}

/** Insert a code cell below the active cell (the first, in an empty notebook); its index. */
export function insertReasonCell(panel: NotebookPanel, source: string): number {
  const notebook = panel.content;
  const model = notebook.model;
  if (!model) {
    throw new Error('the notebook is not loaded yet');
  }
  const at = model.cells.length === 0 ? 0 : notebook.activeCellIndex + 1;
  model.sharedModel.insertCell(at, { cell_type: 'code', source });
  notebook.activeCellIndex = at;
  notebook.deselectAll();
  return at;
}

/**
 * `%load_ext kernel_bridge`, silently (no output, no history, the count does not move): the cell
 * the ask box inserts needs `%%reason`. Loading twice does nothing; a kernel without
 * kernel_bridge fails here quietly, and the cell then says that `%%reason` is unknown.
 */
function loadExtension(kernel: Kernel.IKernelConnection): void {
  const future = kernel.requestExecute({
    code: '%load_ext kernel_bridge',
    silent: true,
    store_history: false,
    allow_stdin: false,
    stop_on_error: false
  });
  future.done.catch(() => undefined);
}

/** Insert cells below the cell whose output holds the trace (else below the active cell). */
export function insertBelowTrace(
  panel: NotebookPanel,
  traceId: string,
  cells: ICellJSON[]
): number {
  const notebook = panel.content;
  const model = notebook.model;
  if (!model) {
    return 0;
  }
  let at = notebook.activeCellIndex;
  for (let i = 0; i < model.cells.length; i++) {
    const cell = model.cells.get(i).toJSON() as any;
    const holds = (cell.outputs ?? []).some(
      (output: any) => bundleId(output.data?.[TRACE_MIME]) === traceId
    );
    if (holds) {
      at = i;
    }
  }
  const fresh = cells.map(cell => {
    // eslint-disable-next-line @typescript-eslint/no-unused-vars
    const { id, ...rest } = cell as any; // new cells get new ids
    return rest;
  });
  model.sharedModel.insertCells(at + 1, fresh);
  notebook.activeCellIndex = at + 1;
  return fresh.length;
}

/** Keep the notebook's copy of the trace (its output bundle) in step with the saved labels. */
export function setTraceLabels(panel: NotebookPanel, traceId: string, labels: ILabels): void {
  const cells = panel.content.model?.cells;
  if (!cells) {
    return;
  }
  for (let i = 0; i < cells.length; i++) {
    const cell = cells.get(i);
    if (cell.type !== 'code') {
      continue;
    }
    const outputs = (cell as ICodeCellModel).outputs;
    for (let j = 0; j < outputs.length; j++) {
      const output = outputs.get(j);
      const trace = output.data[TRACE_MIME] as object | undefined;
      if (bundleId(trace) === traceId) {
        const json = output.toJSON() as any;
        outputs.set(j, { ...json, data: { ...json.data, [TRACE_MIME]: { ...trace, labels } } });
      }
    }
  }
}

function download(text: string, name: string): void {
  const url = URL.createObjectURL(new Blob([text], { type: 'application/jsonl' }));
  const link = document.createElement('a');
  link.href = url;
  link.download = name;
  link.style.display = 'none';
  document.body.appendChild(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}
