/**
 * The trace bundle a finished `%%reason` cell holds (kernel_bridge/bundle.py): the trace's JSON
 * line gzipped and in base64, with its `id` and the user's `labels` in the clear. Notebooks saved
 * before the packing hold the trace's plain JSON; both are read here, and nowhere else. While a
 * run goes, a cell of a kernel that knows the extension is attached holds a live bundle instead.
 */
import { ILabels, ITraceJSON } from './types';

/** The packed form; `labels`, when present, were written after the run and win. */
export interface ITraceBundle {
  id: string;
  encoding: 'gzip+base64';
  trace: string;
  labels?: ILabels;
}

/**
 * The id of a running cell's live bundle, `{id, live: true}`, which holds no trace: the
 * extension draws that run from its comm's events (null for any other bundle).
 */
export function liveBundleId(data: unknown): string | null {
  return (data as { live?: unknown } | null | undefined)?.live === true ? bundleId(data) : null;
}

/** The id of the run a bundle holds, without unpacking it (null for no bundle). */
export function bundleId(data: unknown): string | null {
  const id = (data as { id?: unknown } | null | undefined)?.id;
  return typeof id === 'string' && id ? id : null;
}

/**
 * The trace a bundle holds, or null when it holds none that can be read (a damaged or foreign
 * output): the caller says so instead of drawing it.
 */
export async function readTraceBundle(data: unknown): Promise<ITraceJSON | null> {
  if (!data || typeof data !== 'object') {
    return null;
  }
  const bundle = data as Partial<ITraceBundle> & Partial<ITraceJSON>;
  if (bundle.encoding === undefined) {
    return Array.isArray(bundle.segments) ? (bundle as ITraceJSON) : null;
  }
  if (bundle.encoding !== 'gzip+base64' || typeof bundle.trace !== 'string') {
    return null;
  }
  try {
    const trace = JSON.parse(await gunzip(bundle.trace)) as ITraceJSON;
    if (!trace || !Array.isArray(trace.segments)) {
      return null;
    }
    return bundle.labels ? { ...trace, labels: bundle.labels } : trace;
  } catch {
    return null; // not base64, not gzip or not JSON
  }
}

async function gunzip(base64: string): Promise<string> {
  const bytes = Uint8Array.from(atob(base64), c => c.charCodeAt(0));
  const gzip = new DecompressionStream('gzip');
  const writer = gzip.writable.getWriter();
  // A damaged stream rejects these too; the reading below reports it once.
  writer.write(bytes).catch(() => undefined);
  writer.close().catch(() => undefined);
  return await new Response(gzip.readable).text();
}
