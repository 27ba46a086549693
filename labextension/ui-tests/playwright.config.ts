/**
 * Galata (Playwright) against a real JupyterLab on 127.0.0.1:8888, driving Debian's chromium
 * (/usr/bin/chromium; Playwright never downloads a browser here).
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

// eslint-disable-next-line @typescript-eslint/no-var-requires
const baseConfig = require('@jupyterlab/galata/lib/playwright-config');

// One fresh root folder for the server, shared with the test workers through the environment.
process.env.JUPYTERLAB_GALATA_ROOT_DIR ??= fs.mkdtempSync(path.join(os.tmpdir(), 'kernel-bridge-ui-'));
const root = process.env.JUPYTERLAB_GALATA_ROOT_DIR;

export default {
  ...baseConfig,
  // Generous: CI shares its cores with other work; a test waits for states, never sleeps.
  timeout: 300_000,
  expect: { timeout: 30_000 },
  retries: 0,
  workers: 1,
  outputDir: 'test-results',
  reporter: [['list'], ['html', { open: 'never', outputFolder: 'playwright-report' }]],
  use: {
    ...baseConfig.use,
    baseURL: 'http://127.0.0.1:8888',
    acceptDownloads: true,
    video: 'off', // recording needs Playwright's own ffmpeg download
    trace: 'retain-on-failure',
    screenshot: 'only-on-failure',
    viewport: { width: 1400, height: 900 },
    launchOptions: {
      executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--no-first-run'
      ]
    }
  },
  webServer: {
    command: 'jupyter lab --config jupyter_server_test_config.py',
    url: 'http://127.0.0.1:8888/lab',
    timeout: 120_000,
    reuseExistingServer: false,
    env: {
      ...process.env,
      JUPYTERLAB_GALATA_ROOT_DIR: root,
      KERNEL_BRIDGE_HOME: path.join(root, '.kernel-bridge'),
      KERNEL_BRIDGE_MODEL: ''
    }
  }
};
