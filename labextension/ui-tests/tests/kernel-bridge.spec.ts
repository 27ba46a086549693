/**
 * The extension in a real JupyterLab, with a real kernel and Debian's chromium: `%%reason` with
 * the scripted sampler, the sidebar live and finished, Stop, Insert as cells, feedback saved in
 * the trace file, Export for training, a kernel restart, and the renderer of a reopened notebook.
 */
import { expect, test } from '@jupyterlab/galata';
import * as fs from 'fs';
import * as path from 'path';

import { openNotebook, openSidebar, readTraces, reasonCell, ROOT, screenshot, SCRIPTS, SLOW } from './helpers';

// Galata's tracking of kernels and sessions proxies their REST calls, and its proxy cannot pass
// an interrupt's empty reply or a restart; the server is stopped after the run anyway.
test.use({ autoGoto: true, kernels: null, sessions: null });

test.describe('kernel-bridge', () => {
  test('the sidebar shows a run live, then its steps and answer; feedback, export, insert, reopen', async ({
    page,
    tmpPath
  }) => {
    await openNotebook(page, tmpPath, 'reason.ipynb');
    const sidebar = await openSidebar(page);
    await expect(sidebar.getByText('No trace yet')).toBeVisible();

    await page.notebook.setCell(0, 'code', '%load_ext kernel_bridge');
    await page.notebook.runCell(0, true);
    await page.notebook.addCell('code', reasonCell('primes.txt', 'What do the primes below 50 sum to?'));
    await page.notebook.runCell(1, true);

    // The steps, each with its status, code and output, and the answer.
    const steps = sidebar.locator('.kb-Step');
    await expect(steps).toHaveCount(2, { timeout: SLOW });
    await expect(steps.nth(0)).toHaveAttribute('data-status', 'ok');
    await expect(steps.nth(1)).toHaveAttribute('data-status', 'ok');
    await expect(steps.nth(0).locator('.kb-Code')).toContainText('primes = [n for n in range(2, 50)');
    await expect(steps.nth(0).locator('.kb-Outputs')).toContainText('15');
    await expect(steps.nth(1).locator('.kb-Outputs')).toContainText('328');
    await expect(sidebar.getByRole('group', { name: 'Answer' })).toContainText('The primes below 50 sum to 328');
    await expect(sidebar.locator('.kb-Trace-header [role="status"]')).toHaveText('answered');
    await expect(sidebar.locator('.kb-Trace-tokens')).toContainText('model');
    // Code is highlighted by JupyterLab's editor languages.
    await expect(steps.nth(0).locator('.kb-Code span').first()).toBeVisible();
    await expect(sidebar.getByRole('button', { name: 'Stop the run' })).toBeDisabled();

    // 👍 with a note: saved in the trace's labels, in the JSONL file.
    await sidebar.getByRole('textbox', { name: 'Note on this trace' }).fill('clear and correct');
    await sidebar.getByRole('button', { name: 'Good trace' }).click();
    await expect(sidebar.getByText('Feedback saved in the trace')).toBeVisible();
    await expect(sidebar.getByRole('button', { name: 'Good trace' })).toHaveAttribute('aria-pressed', 'true');
    const traces = readTraces(tmpPath);
    const last = traces[traces.length - 1];
    expect(last.labels).toEqual({ rating: 'up', note: 'clear and correct' });
    expect(traces.filter(t => t.id === last.id)).toHaveLength(2); // appended, not rewritten
    await screenshot(sidebar, 'sidebar.png');
    // Theme-aware: the same sidebar in the dark theme.
    await page.theme.setDarkTheme();
    await expect(sidebar.locator('.kb-Step').first()).toBeVisible();
    await screenshot(sidebar, 'sidebar-dark.png');
    await page.theme.setLightTheme();

    // Copy answer: the answer's Markdown on the clipboard.
    await page.context().grantPermissions(['clipboard-read', 'clipboard-write']);
    await sidebar.getByRole('button', { name: 'Copy answer' }).click();
    await expect(sidebar.getByText('Answer copied')).toBeVisible();
    expect(await page.evaluate(() => navigator.clipboard.readText())).toBe(
      'The primes below 50 sum to **328**.'
    );

    // Export for training: one JSONL line, the trace with its labels.
    const [download] = await Promise.all([
      page.waitForEvent('download'),
      sidebar.getByRole('button', { name: 'Export for training' }).click()
    ]);
    expect(download.suggestedFilename()).toBe(`trace-${last.id.slice(0, 8)}.jsonl`);
    const exported = fs.readFileSync((await download.path()) as string, 'utf-8').trim().split('\n');
    expect(exported).toHaveLength(1);
    expect(JSON.parse(exported[0])).toMatchObject({ id: last.id, labels: { rating: 'up' }, finish_reason: 'answer' });

    // Insert as cells: thinking as markdown, the code cells with their outputs, the answer.
    await sidebar.getByRole('button', { name: 'Insert as cells' }).click();
    await expect(sidebar.getByText('Inserted 6 cells')).toBeVisible();
    expect(await page.notebook.getCellCount()).toBe(8);
    expect(await page.notebook.getCellType(2)).toBe('markdown');
    expect(await page.notebook.getCellTextInput(3)).toContain('primes = [n for n in range(2, 50)');
    expect(await page.notebook.getCellTextInput(5)).toBe('sum(primes)');
    expect((await page.notebook.getCellTextOutput(5))?.join('')).toContain('328');
    expect(await page.notebook.getCellTextInput(7)).toContain('**Answer**');

    // Reopen the saved notebook: the trace renderer draws the run from the saved output.
    await page.notebook.save();
    await page.notebook.close();
    await page.notebook.openByPath(`${tmpPath}/reason.ipynb`);
    await page.notebook.activate('reason.ipynb');
    const rendered = page.locator('.jp-OutputArea-output.kb-TraceRenderer');
    await expect(rendered).toHaveCount(1);
    await expect(rendered.locator('.kb-Step')).toHaveCount(2);
    await expect(rendered.locator('.kb-Step').nth(1)).toContainText('328');
    await expect(rendered.getByRole('group', { name: 'Answer' })).toContainText('sum to 328');
    await expect(rendered.locator('.kb-Trace-header [role="status"]')).toHaveText('answered');
    await rendered.scrollIntoViewIfNeeded();
    await screenshot(rendered, 'renderer.png');
    // The reopened notebook's trace is in the sidebar's history, with its 👍.
    await expect(sidebar.locator('.kb-History-item')).toHaveCount(1);
    await expect(sidebar.locator('.kb-History-item')).toContainText('👍');
  });

  test('Stop interrupts a long run and the trace says so', async ({ page, tmpPath }) => {
    await openNotebook(page, tmpPath, 'stop.ipynb');
    const sidebar = await openSidebar(page);
    await page.notebook.setCell(0, 'code', '%load_ext kernel_bridge');
    await page.notebook.runCell(0, true);
    await page.notebook.addCell('code', reasonCell('magic_sleep.txt', 'Sleep a while.'));
    void page.notebook.runCell(1, { inplace: true, wait: false });

    const step = sidebar.locator('.kb-Step').first();
    await expect(step).toHaveAttribute('data-status', 'running', { timeout: SLOW });
    const stop = sidebar.getByRole('button', { name: 'Stop the run' });
    await expect(stop).toBeEnabled();
    // The running cell holds one view of the run, drawn from the events the sidebar reads: the
    // thinking and the running step, and no streamed copy of them beside it.
    const outputs = (await page.notebook.getCellLocator(1))!.locator('.jp-OutputArea-output');
    await expect(outputs.locator('.kb-Step').first()).toHaveAttribute('data-status', 'running');
    await expect(outputs.first()).toContainText('This will take a while.');
    await expect(outputs).toHaveCount(1);
    await screenshot(sidebar, 'sidebar-running.png');
    await screenshot(page, 'lab-running.png');
    const pressed = Date.now();
    await stop.click();
    await expect(sidebar.locator('.kb-Trace-header [role="status"]')).toHaveText('stopped', { timeout: 20_000 });
    expect(Date.now() - pressed).toBeLessThan(20_000); // the block sleeps 30 s
    await expect(stop).toBeDisabled();
    await page.notebook.waitForRun(1);
    expect((await page.notebook.getCellTextOutput(1))?.join('')).toContain('interrupted; trace');
  });

  test('the sidebar follows the active notebook and survives a kernel restart', async ({ page, tmpPath }) => {
    await openNotebook(page, tmpPath, 'first.ipynb');
    const sidebar = await openSidebar(page);
    await page.notebook.setCell(0, 'code', '%load_ext kernel_bridge\ndata = [1, 2, 3]');
    await page.notebook.runCell(0, true);
    await page.notebook.addCell('code', reasonCell('magic_shared.txt', 'Sum data.'));
    await page.notebook.runCell(1, true);
    await expect(sidebar.getByRole('group', { name: 'Answer' })).toContainText('The total of data is 6', { timeout: SLOW });

    // Another notebook: the sidebar shows its (empty) state, then comes back to the first.
    await openNotebook(page, tmpPath, 'second.ipynb');
    await expect(sidebar.getByText('No trace yet')).toBeVisible({ timeout: SLOW });
    await page.notebook.activate('first.ipynb');
    await expect(sidebar.getByRole('group', { name: 'Answer' })).toContainText('The total of data is 6');

    // Restart the kernel: the comm target is registered again, and a new run streams in.
    await page.evaluate(async () => {
      const panel = window.jupyterapp.shell.currentWidget as any;
      await panel.sessionContext.restartKernel();
    });
    await expect(page.locator('#jp-main-statusbar')).toContainText('Idle', { timeout: SLOW });
    await expect(sidebar.locator('.kb-Sidebar-kernel')).toHaveText('idle', { timeout: SLOW });
    await page.notebook.runCell(0, true);
    await page.notebook.runCell(1, true);
    await expect(sidebar.locator('.kb-History-item')).toHaveCount(2);
    await expect(sidebar.locator('.kb-Step')).toHaveCount(1);
    await expect(sidebar.locator('.kb-Step').first()).toHaveAttribute('data-status', 'ok');
    await expect(sidebar.locator('.kb-Trace-header [role="status"]')).toHaveText('answered');
  });

  test('a 1,000-step trace renders only the rows in view', async ({ page, tmpPath }) => {
    await openNotebook(page, tmpPath, 'long.ipynb');
    // A saved trace of 1,000 steps, shown by the renderer (built in the kernel, no model run).
    const script = [
      'from IPython.display import display',
      'from kernel_bridge.trace import Segment, Span, Step, Trace',
      '',
      "text, spans, steps = '', [], []",
      'for i in range(1000):',
      "    prose, code = f'Step {i}.\\n', f'x = {i}\\n'",
      "    spans.append(Span('think', len(text), len(text) + len(prose)))",
      '    text += prose',
      "    spans.append(Span('code', len(text), len(text) + len(code), step=i))",
      '    text += code',
      "    output = {'output_type': 'stream', 'name': 'stdout', 'text': f'{i}\\n'}",
      "    steps.append(Step(i, code, 'ok', str(i), [output], i, 0.0, 0.01, []))",
      'trace = Trace(',
      "    model='m', sampler={'name': 'scripted'}, messages=[{'role': 'user', 'content': 'long'}],",
      "    segments=[Segment('model', text, spans=spans)], steps=steps, answer='done',",
      "    finish_reason='answer',",
      ')',
      "display({'application/vnd.kernel-bridge.trace+json': trace.to_dict(), 'text/plain': 'trace'}, raw=True)",
      ''
    ].join('\n');
    fs.writeFileSync(path.join(ROOT, tmpPath, 'long_trace.py'), script);
    const code = '%run long_trace.py';
    await page.notebook.setCell(0, 'code', code);
    await page.notebook.runCell(0, true);
    const rendered = page.locator('.kb-TraceRenderer');
    await expect(rendered.locator('.kb-Trace-steps')).toHaveText('1000 steps');
    const count = await rendered.locator('.kb-Step').count();
    expect(count).toBeGreaterThan(0);
    expect(count).toBeLessThan(60);
    // Scrolling to the end brings the last rows in, still without the others.
    await rendered.locator('.kb-Trace-scroll').evaluate(el => (el.scrollTop = el.scrollHeight));
    await expect(rendered.getByRole('group', { name: 'Answer' })).toContainText('done');
    await expect(rendered.locator('.kb-Step').last()).toContainText('Step 1000');
    expect(await rendered.locator('.kb-Step').count()).toBeLessThan(60);
  });

  test('settings: the default model and collapsed thinking apply to the next run', async ({ page, tmpPath }) => {
    await page.evaluate(async model => {
      const registry = await window.galata.getPlugin('@jupyterlab/apputils-extension:settings');
      await registry!.set('kernel-bridge:plugin', 'defaultModel', model);
      await registry!.set('kernel-bridge:plugin', 'showThinking', false);
    }, `scripted:${path.join(SCRIPTS, 'primes.txt')}`);
    await openNotebook(page, tmpPath, 'settings.ipynb');
    const sidebar = await openSidebar(page);
    await page.notebook.setCell(0, 'code', '%load_ext kernel_bridge');
    await page.notebook.runCell(0, true);
    await page.notebook.addCell('code', '%%reason --trace traces.jsonl\nWhat do the primes below 50 sum to?');
    await page.notebook.runCell(1, true);
    await expect(sidebar.getByRole('group', { name: 'Answer' })).toContainText('sum to 328');
    const toggles = sidebar.locator('.kb-Think-toggle');
    await expect(toggles.first()).toHaveAttribute('aria-expanded', 'false');
    await toggles.first().press('Enter'); // keyboard: the toggle is a button
    await expect(toggles.first()).toHaveAttribute('aria-expanded', 'true');
    await page.evaluate(async () => {
      const registry = await window.galata.getPlugin('@jupyterlab/apputils-extension:settings');
      await registry!.remove('kernel-bridge:plugin', 'defaultModel');
      await registry!.remove('kernel-bridge:plugin', 'showThinking');
    });
  });
});
