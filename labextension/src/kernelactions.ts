/**
 * What the sidebar asks the notebook's kernel to do, after a run: save labels, turn a trace into
 * cells, apply the settings. Each is one silent execute whose `user_expressions` call a function
 * of `kernel_bridge.lab`; nothing shows in the notebook and the execution count does not move.
 */
import { Kernel } from '@jupyterlab/services';

import { ICellJSON, ILabels, ITraceJSON } from './types';

/** A kernel-side call that failed; the message is the Python exception's. */
export class KernelActionError extends Error {}

/** The Python expression that calls `kernel_bridge.lab.<name>(args)`; args travel as JSON. */
export function labCall(name: string, args: object): string {
  // A JSON string literal is also a valid Python string literal.
  const literal = JSON.stringify(JSON.stringify(args));
  return `__import__('kernel_bridge.lab', fromlist=['${name}']).${name}(__import__('json').loads(${literal}))`;
}

async function call<T>(kernel: Kernel.IKernelConnection, name: string, args: object): Promise<T> {
  const future = kernel.requestExecute({
    code: '',
    silent: true,
    store_history: false,
    allow_stdin: false,
    stop_on_error: false,
    user_expressions: { result: labCall(name, args) }
  });
  const reply = await future.done;
  const content = reply.content as any;
  const result = content.user_expressions?.result;
  if (!result) {
    throw new KernelActionError(`the kernel did not answer (${content.status})`);
  }
  if (result.status !== 'ok') {
    throw new KernelActionError(`${result.ename}: ${result.evalue}`);
  }
  return result.data['application/json'] as T;
}

/** Save labels into the trace's JSONL store; returns the trace's labels as saved. */
export function saveLabels(
  kernel: Kernel.IKernelConnection,
  tracePath: string,
  traceId: string,
  labels: ILabels,
  trace: ITraceJSON | null
): Promise<ILabels> {
  return call<ILabels>(kernel, 'set_labels', {
    trace_path: tracePath,
    trace_id: traceId,
    labels,
    trace
  });
}

/** The trace as notebook cells (markdown for thinking, code cells with their outputs). */
export function traceCells(
  kernel: Kernel.IKernelConnection,
  trace: ITraceJSON | null,
  tracePath: string | null,
  traceId: string
): Promise<ICellJSON[]> {
  return call<ICellJSON[]>(kernel, 'trace_cells', {
    trace,
    trace_path: tracePath,
    trace_id: traceId
  });
}

/** Make the settings the defaults of `%%reason` in this kernel (now, or once it is loaded). */
export function applySettings(
  kernel: Kernel.IKernelConnection,
  settings: { model?: string; isolated?: boolean; max_steps?: number; live_view?: boolean }
): Promise<unknown> {
  return call(kernel, 'apply_settings', settings);
}
