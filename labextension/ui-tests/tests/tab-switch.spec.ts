/**
 * Issue 15, item 2: a notebook's saved traces stay drawn when its tab is hidden and shown again
 * (a hidden tab measures 0 px; the renderer must not keep those sizes).
 */
import { expect, test } from '@jupyterlab/galata';

import { openNotebook, SLOW, savedTrace, traceCell } from './helpers';

test.use({ autoGoto: true, kernels: null, sessions: null });

test('saved traces stay drawn after switching to another notebook tab and back', async ({
  page,
  tmpPath
}) => {
  const cells = [traceCell(savedTrace('first-trace', 'Count to six', 6))];
  await openNotebook(page, tmpPath, 'saved.ipynb', cells);
  const rendered = page.locator('.jp-NotebookPanel:not(.lm-mod-hidden) .kb-TraceRenderer');
  await expect(rendered.locator('.kb-Step').first()).toBeVisible({ timeout: SLOW });
  const scroll = rendered.locator('.kb-Trace-scroll');
  const height = async () => (await scroll.boundingBox())?.height ?? 0;
  await expect.poll(height, { timeout: SLOW }).toBeGreaterThan(200);
  const before = await height();

  for (let round = 0; round < 2; round++) {
    await openNotebook(page, tmpPath, `other-${round}.ipynb`);
    await expect(rendered).toHaveCount(0);
    await page.notebook.activate('saved.ipynb');
    await expect(rendered.locator('.kb-Step').first()).toBeVisible({ timeout: SLOW });
    await expect.poll(height, { timeout: SLOW }).toBeGreaterThan(before - 2);
  }
  // Still a working list: its end scrolls into view.
  await scroll.evaluate(el => (el.scrollTop = el.scrollHeight));
  await expect(rendered.getByRole('group', { name: 'Answer' })).toContainText('The last value is 10');
});
