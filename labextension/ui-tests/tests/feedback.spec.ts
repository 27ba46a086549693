/**
 * Issue 15, item 1: the sidebar shows one 👍/👎/Note/Save row, the selected trace's, however often
 * the selection or the notebook changes (rows used to pile up, showing other traces' labels).
 */
import { expect, test } from '@jupyterlab/galata';
import * as path from 'path';

import { openNotebook, openSidebar, ROOT, savedTrace, SLOW, traceCell } from './helpers';

test.use({ autoGoto: true, kernels: null, sessions: null });

test('one feedback row, the selected trace’s, as the selection and the notebook change', async ({
  page,
  tmpPath
}) => {
  const file = path.join(ROOT, tmpPath, 'traces.jsonl');
  const traces = [
    savedTrace('trace-up', 'First question', 2, { rating: 'up', note: 'clear' }),
    savedTrace('trace-none', 'Second question', 2),
    savedTrace('trace-down', 'Third question', 2, { rating: 'down' })
  ];
  await openNotebook(
    page,
    tmpPath,
    'feedback.ipynb',
    traces.map(trace => traceCell(trace, file))
  );
  const sidebar = await openSidebar(page);
  const items = sidebar.locator('.kb-History-item');
  await expect(items).toHaveCount(3, { timeout: SLOW });
  const rows = sidebar.locator('.kb-Feedback');
  const good = sidebar.getByRole('button', { name: 'Good trace' });
  const bad = sidebar.getByRole('button', { name: 'Bad trace' });
  const note = sidebar.getByRole('textbox', { name: 'Note on this trace' });

  // History lists the newest first: Third, Second, First.
  const expected = [
    { question: 'Third question', good: 'false', bad: 'true', note: '' },
    { question: 'Second question', good: 'false', bad: 'false', note: '' },
    { question: 'First question', good: 'true', bad: 'false', note: 'clear' }
  ];
  for (let round = 0; round < 3; round++) {
    for (let i = 0; i < 3; i++) {
      await items.nth(i).click();
      await expect(items.nth(i)).toHaveAttribute('aria-current', 'true');
      await expect(sidebar.locator('.kb-Trace-question')).toHaveText(expected[i].question);
      await expect(rows).toHaveCount(1);
      await expect(good).toHaveAttribute('aria-pressed', expected[i].good);
      await expect(bad).toHaveAttribute('aria-pressed', expected[i].bad);
      await expect(note).toHaveValue(expected[i].note);
    }
  }

  // A note typed here stays out of another notebook, and the rows do not pile up there either.
  await note.fill('typed in feedback.ipynb');
  const other = savedTrace('trace-other', 'Another notebook', 1);
  await openNotebook(page, tmpPath, 'other.ipynb', [traceCell(other, file)]);
  await expect(sidebar.locator('.kb-Trace-question')).toHaveText('Another notebook', {
    timeout: SLOW
  });
  await expect(rows).toHaveCount(1);
  await expect(note).toHaveValue('');
  await page.notebook.activate('feedback.ipynb');
  await expect(sidebar.locator('.kb-Trace-question')).toHaveText('First question');
  await expect(rows).toHaveCount(1);
  await expect(note).toHaveValue('clear');
  await expect(sidebar.locator('.kb-Trace')).toHaveCount(1);
});
