import { describe, expect, it } from 'vitest';

import { bundleId, readTraceBundle } from '../src/bundle';
import { BUNDLE, RUN_TRACE } from './fixtures';

describe('the trace bundle of a finished cell', () => {
  it('unpacks to the trace Python packed', async () => {
    expect(BUNDLE.encoding).toBe('gzip+base64');
    expect(bundleId(BUNDLE)).toBe(RUN_TRACE.id);
    expect(await readTraceBundle(BUNDLE)).toEqual(RUN_TRACE);
  });

  it('lets labels written beside the packed trace win', async () => {
    const labels = { rating: 'up' as const, note: 'checked' };
    const trace = await readTraceBundle({ ...BUNDLE, labels });
    expect(trace?.labels).toEqual(labels);
    expect(trace?.segments).toEqual(RUN_TRACE.segments);
  });

  it('reads the plain trace older notebooks hold', async () => {
    expect(await readTraceBundle(RUN_TRACE)).toBe(RUN_TRACE);
    expect(bundleId(RUN_TRACE)).toBe(RUN_TRACE.id);
  });

  it('gives null, not an exception, for what holds no readable trace', async () => {
    for (const damaged of [
      null,
      'text',
      { id: 'x' },
      { ...BUNDLE, encoding: 'brotli' },
      { ...BUNDLE, trace: 'not base64!' },
      { ...BUNDLE, trace: btoa('plain bytes') },
      { ...BUNDLE, trace: BUNDLE.trace.slice(0, 40) }
    ]) {
      expect(await readTraceBundle(damaged)).toBeNull();
    }
    expect(bundleId({ encoding: 'gzip+base64' })).toBeNull();
  });
});
