import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    environment: 'jsdom',
    include: ['test/**/*.spec.{ts,tsx}'],
    css: false,
    setupFiles: ['test/setup.ts'],
    server: { deps: { inline: [/@jupyterlab\//, /@lumino\//] } }
  },
  esbuild: { jsx: 'transform' }
});
