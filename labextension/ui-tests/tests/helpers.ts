/**
 * What the UI tests share: notebooks opened with a preset kernel (no kernel dialog to race
 * with), the sidebar, `%%reason` cells of the scripted model, saved traces and screenshots.
 * Every wait is for a state, with the generous timeouts of a slow, busy machine; none is a sleep.
 */
import { expect, IJupyterLabPageFixture } from '@jupyterlab/galata';
import * as fs from 'fs';
import * as path from 'path';

export const SCRIPTS = path.resolve(__dirname, '../../../tests/scripts');
export const ROOT = process.env.JUPYTERLAB_GALATA_ROOT_DIR as string;
export const SCREENSHOTS = path.resolve(__dirname, '../test-results/screenshots');

/** A kernel start or a model run on a loaded machine can take long: wait up to this. */
export const SLOW = 120_000;

/** A `%%reason` cell that runs the scripted model on a script of tests/scripts. */
export function reasonCell(script: string, question: string): string {
  return `%%reason --model scripted:${path.join(SCRIPTS, script)} --trace traces.jsonl\n${question}`;
}

/** An nbformat v4 notebook with the python3 kernelspec and these cells. */
export function notebookJSON(cells: object[] = []): object {
  return {
    cells: cells.length ? cells : [codeCell('')],
    metadata: {
      kernelspec: { display_name: 'Python 3 (ipykernel)', language: 'python', name: 'python3' },
      language_info: { name: 'python' }
    },
    nbformat: 4,
    nbformat_minor: 5
  };
}

export function codeCell(source: string, outputs: object[] = []): object {
  return { cell_type: 'code', execution_count: null, metadata: {}, outputs, source };
}

/**
 * Write a notebook through the contents API and open it: its kernelspec names the kernel, so no
 * kernel dialog opens. Returns once the notebook is the current widget and its kernel is idle.
 */
export async function openNotebook(
  page: IJupyterLabPageFixture,
  tmpPath: string,
  name: string,
  cells: object[] = []
): Promise<void> {
  const file = `${tmpPath}/${name}`;
  await page.contents.uploadContent(JSON.stringify(notebookJSON(cells)), 'text', file);
  await page.evaluate(async file => {
    await window.jupyterapp.commands.execute('docmanager:open', {
      path: file,
      factory: 'Notebook'
    });
  }, file);
  await waitForKernel(page, name);
  await page.notebook.activate(name);
}

/** Wait until the notebook `name` is open and its kernel is idle. */
export async function waitForKernel(page: IJupyterLabPageFixture, name: string): Promise<void> {
  await page.waitForFunction(
    name => {
      for (const widget of window.jupyterapp.shell.widgets('main')) {
        const panel = widget as any;
        if (panel.context?.path?.split('/').pop() === name) {
          return panel.sessionContext?.session?.kernel?.status === 'idle';
        }
      }
      return false;
    },
    name,
    { timeout: SLOW, polling: 250 }
  );
}

/** Open the sidebar (through its command) at a width that shows code well. */
export async function openSidebar(page: IJupyterLabPageFixture) {
  await page.evaluate(() => window.jupyterapp.commands.execute('kernel-bridge:open-sidebar'));
  const sidebar = page.locator('#kernel-bridge-sidebar');
  await expect(sidebar).toBeVisible();
  await page.sidebar.setWidth(440, 'right');
  return sidebar;
}

export async function screenshot(
  target: { screenshot: (options: { path: string }) => Promise<unknown> },
  name: string,
  folder: string = SCREENSHOTS
): Promise<void> {
  fs.mkdirSync(folder, { recursive: true });
  await target.screenshot({ path: path.join(folder, name) });
}

/** The traces a run appended to `traces.jsonl` in the test's folder. */
export function readTraces(tmpPath: string): any[] {
  return fs
    .readFileSync(path.join(ROOT, tmpPath, 'traces.jsonl'), 'utf-8')
    .split('\n')
    .filter(line => line.trim())
    .map(line => JSON.parse(line));
}

/** A saved trace of `n` steps (docs/trace-format.md), each a code block that printed its number. */
export function savedTrace(id: string, question: string, n: number, labels: object = {}): object {
  let text = '';
  const spans: object[] = [];
  const steps: object[] = [];
  for (let i = 0; i < n; i++) {
    const prose = `Step ${i}: I compute the value for ${i}.\n`;
    spans.push({ kind: 'think', start: text.length, end: text.length + prose.length });
    text += prose;
    const code = `value_${i} = ${i} * 2\nprint(value_${i})\n`;
    spans.push({ kind: 'code', start: text.length, end: text.length + code.length, step: i });
    text += code;
    steps.push({
      index: i,
      code,
      status: 'ok',
      output_text: String(i * 2),
      outputs: [{ output_type: 'stream', name: 'stdout', text: `${i * 2}\n` }],
      execution_count: i + 1,
      started: 1738324800 + i,
      duration_s: 0.01,
      new_files: []
    });
  }
  return {
    format_version: 1,
    id,
    created: '2025-01-31T12:00:00.000Z',
    model: 'scripted',
    sampler: { name: 'scripted' },
    profile: 'markdown',
    messages: [{ role: 'user', content: question }],
    segments: [{ kind: 'model', text, spans }],
    steps,
    answer: `The last value is ${(n - 1) * 2}.`,
    finish_reason: 'answer',
    error: null,
    usage: { prompt_tokens: 10, model_tokens: 100, tool_tokens: 20 },
    timings: { total_s: 1.5 },
    labels,
    reward: null
  };
}

/** A cell whose saved output is a trace, as a finished `%%reason` cell keeps it. */
export function traceCell(trace: any, tracePath: string | null = null): object {
  const mime = 'application/vnd.kernel-bridge.trace+json';
  return codeCell(`%%reason\n${trace.messages[0].content}`, [
    {
      output_type: 'display_data',
      data: { [mime]: trace, 'text/plain': 'trace' },
      metadata: tracePath ? { [mime]: { trace_path: tracePath } } : {}
    }
  ]);
}
