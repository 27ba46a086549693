// Build the prebuilt extension (into build/kernel-bridge) with @jupyterlab/builder, against the
// JupyterLab core metadata that @jupyterlab/core-meta ships. This is what `jupyter labextension
// build` does, without needing Python's jupyterlab: the wheel's build hook runs only npm.
// Arguments (e.g. --development) go to the builder.
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import { createRequire } from 'module';
import * as os from 'os';
import * as path from 'path';
import { fileURLToPath } from 'url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(path.join(root, 'package.json'));
const coreMeta = require.resolve('@jupyterlab/core-meta/core.package.json');
const builder = require.resolve('@jupyterlab/builder/lib/build-labextension.js');

// The builder reads the core metadata from <core path>/package.json.
const corePath = fs.mkdtempSync(path.join(os.tmpdir(), 'kernel-bridge-core-'));
try {
  fs.copyFileSync(coreMeta, path.join(corePath, 'package.json'));
  execFileSync(
    process.execPath,
    [builder, '--core-path', corePath, ...process.argv.slice(2), root],
    {
      cwd: root,
      stdio: 'inherit'
    }
  );
} finally {
  fs.rmSync(corePath, { recursive: true, force: true });
}
