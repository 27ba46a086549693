/**
 * The pictures of the README (docs/img/): the sidebar and a finished `%%reason` cell, light and
 * dark, from a real run of the scripted model. They go to test-results/screenshots; with
 * KB_DOCS_IMG=1 to docs/img/ (how the README's are made). The test also checks what the pictures
 * show: the sidebar resizes like any JupyterLab side panel, and code scrolls sideways there.
 */
import { expect, test } from '@jupyterlab/galata';
import * as path from 'path';

import {
  codeCell,
  openNotebook,
  openSidebar,
  reasonCell,
  screenshot,
  SCREENSHOTS,
  SLOW
} from './helpers';

test.use({ autoGoto: true, kernels: null, sessions: null, viewport: { width: 1280, height: 900 } });

const FOLDER = process.env.KB_DOCS_IMG ? path.resolve(__dirname, '../../../docs/img') : SCREENSHOTS;

test.afterEach(async ({ page }) => {
  await page.theme.setLightTheme();
});

test('screenshots: the sidebar and a finished cell, light and dark', async ({ page, tmpPath }) => {
  await openNotebook(page, tmpPath, 'primes.ipynb', [
    codeCell('%load_ext kernel_bridge'),
    codeCell(reasonCell('primes.txt', 'What do the primes below 50 sum to?'))
  ]);
  const sidebar = await openSidebar(page);
  await page.notebook.runCell(0, true);
  await page.notebook.runCell(1, true);
  await expect(sidebar.getByRole('group', { name: 'Answer' })).toContainText('sum to 328', {
    timeout: SLOW
  });
  await expect(sidebar.locator('.kb-Trace-header [role="status"]')).toHaveText('answered');
  await expect(sidebar.locator('.kb-Step .kb-Code span').first()).toBeVisible(); // highlighted

  // Resizable like any side panel; at any width, code keeps its lines and scrolls sideways.
  await page.sidebar.setWidth(360, 'right');
  await expect.poll(async () => (await sidebar.boundingBox())?.width ?? 0).toBeLessThan(380);
  const code = sidebar.locator('.kb-Step .kb-Code').first();
  const lines = await code.evaluate(el => {
    const style = getComputedStyle(el);
    return {
      scrolls: el.scrollWidth > el.clientWidth,
      whiteSpace: style.whiteSpace,
      rows: Math.round(
        (el.clientHeight - parseFloat(style.paddingTop) - parseFloat(style.paddingBottom)) /
          parseFloat(style.lineHeight)
      )
    };
  });
  expect(lines).toMatchObject({ scrolls: true, whiteSpace: 'pre', rows: 2 });
  // Thinking reads as prose: the UI font, wrapped at word boundaries.
  const think = sidebar.locator('.kb-Think-body').first();
  const font = await think.evaluate(el => [
    getComputedStyle(el).fontFamily,
    getComputedStyle(el).overflowWrap
  ]);
  const uiFont = await page.evaluate(() =>
    getComputedStyle(document.body).getPropertyValue('--jp-ui-font-family').trim()
  );
  expect(font).toEqual([uiFont, 'break-word']);
  await page.sidebar.setWidth(480, 'right');
  await expect.poll(async () => (await sidebar.boundingBox())?.width ?? 0).toBeGreaterThan(460);

  const cell = (await page.notebook.getCellLocator(1))!;
  const rendered = cell.locator('.kb-TraceRenderer');
  await expect(rendered.getByRole('group', { name: 'Answer' })).toContainText('sum to 328');
  await page.sidebar.close('left');
  await screenshot(sidebar, 'sidebar-light.png', FOLDER);
  // The cell with the notebook at full width: the sidebar closed, then opened again (dark).
  await page.sidebar.close('right');
  for (const theme of ['light', 'dark']) {
    if (theme === 'dark') {
      await page.theme.setDarkTheme();
    }
    await cell.scrollIntoViewIfNeeded();
    await expect(rendered.locator('.kb-Step').first()).toBeVisible();
    await screenshot(cell, `cell-${theme}.png`, FOLDER);
  }
  await openSidebar(page);
  await page.sidebar.setWidth(480, 'right');
  await expect(sidebar.locator('.kb-Step').first()).toBeVisible();
  await expect(sidebar.getByRole('group', { name: 'Answer' })).toBeVisible();
  await screenshot(sidebar, 'sidebar-dark.png', FOLDER);
});
