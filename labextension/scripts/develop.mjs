// Dev loop: link the JupyterLab extension folder of the active Python environment to this build,
// so `npm run build` (or `npm run watch` + `jupyter labextension watch .`) shows up on reload.
// What `jupyter labextension develop` does for packages that ship `_jupyter_labextension_paths`.
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { fileURLToPath } from 'url';

const here = path.dirname(fileURLToPath(import.meta.url));
const build = path.resolve(here, '..', 'build', 'kernel-bridge');
const python = process.env.PYTHON ?? 'python3';
const prefix = execFileSync(python, ['-c', 'import sys; print(sys.prefix)']).toString().trim();
const target = path.join(prefix, 'share', 'jupyter', 'labextensions', 'kernel-bridge');

if (!fs.existsSync(build)) {
  console.error(`no build at ${build}: run npm run build first`);
  process.exit(1);
}
fs.mkdirSync(path.dirname(target), { recursive: true });
fs.rmSync(target, { recursive: true, force: true });
fs.symlinkSync(build, target, 'dir');
console.log(`${target} -> ${build}`);
