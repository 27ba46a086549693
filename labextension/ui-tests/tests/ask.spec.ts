/**
 * Issue 15, item 8: a question typed in the sidebar's ask box becomes a `%%reason` cell below the
 * active cell, with the sidebar's model and options, and runs; the notebook stays the record.
 */
import { expect, test } from '@jupyterlab/galata';
import * as path from 'path';

import { codeCell, openNotebook, openSidebar, SCRIPTS, SLOW } from './helpers';

test.use({ autoGoto: true, kernels: null, sessions: null });

const MODEL = `scripted:${path.join(SCRIPTS, 'primes.txt')}`;

test.afterEach(async ({ page }) => {
  await page.evaluate(async () => {
    const registry = await window.galata.getPlugin('@jupyterlab/apputils-extension:settings');
    await registry!.remove('kernel-bridge:plugin', 'defaultModel');
    await registry!.remove('kernel-bridge:plugin', 'maxSteps');
  });
});

test('Enter in the ask box inserts a %%reason cell below the active cell and runs it', async ({
  page,
  tmpPath
}) => {
  // The sidebar's model and options come from the settings.
  await page.evaluate(async model => {
    const registry = await window.galata.getPlugin('@jupyterlab/apputils-extension:settings');
    await registry!.set('kernel-bridge:plugin', 'defaultModel', model);
    await registry!.set('kernel-bridge:plugin', 'maxSteps', 8);
  }, MODEL);
  // No %load_ext in this notebook: the ask box loads the extension itself.
  await openNotebook(page, tmpPath, 'ask.ipynb', [codeCell('x = 1'), codeCell('y = 2')]);
  await page.notebook.selectCells(0);
  const sidebar = await openSidebar(page);
  const ask = sidebar.getByRole('form', { name: 'Ask the model' });
  await expect(ask.locator('summary')).toContainText('primes.txt', { timeout: SLOW });
  await expect(ask.locator('summary')).toContainText('8 steps');

  const question = ask.getByRole('textbox', { name: 'Question' });
  await question.fill('What do the primes below 50 sum to?');
  await question.press('Enter');

  // The new cell is below the active one (cell 0), with the model and options, and it ran.
  await expect.poll(() => page.notebook.getCellCount(), { timeout: SLOW }).toBe(3);
  expect(await page.notebook.getCellTextInput(1)).toBe(
    `%%reason --model ${MODEL} --max-steps 8\nWhat do the primes below 50 sum to?`
  );
  expect(await page.notebook.getCellTextInput(2)).toBe('y = 2');
  await expect(question).toHaveValue('');
  await expect(sidebar.getByRole('group', { name: 'Answer' })).toContainText('sum to 328', {
    timeout: SLOW
  });
  await expect(sidebar.locator('.kb-Trace-header [role="status"]')).toHaveText('answered');
  await expect(sidebar.locator('.kb-Trace-question')).toHaveText(
    'What do the primes below 50 sum to?'
  );
  const cell = (await page.notebook.getCellLocator(1))!;
  await expect(cell.locator('.jp-InputArea-prompt')).toHaveText(/\[\d+\]:/, { timeout: SLOW });
  await expect(cell.locator('.jp-Cell-outputArea')).toContainText('328', { timeout: SLOW });

  // Shift+Enter is a new line; an empty question asks nothing.
  await question.fill('first line');
  await question.press('Shift+Enter');
  await expect(question).toHaveValue('first line\n');
  expect(await page.notebook.getCellCount()).toBe(3);
});
