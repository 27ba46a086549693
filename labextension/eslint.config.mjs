// ESLint flat config, after the JupyterLab extension template (jupyterlab/extension-template):
// eslint recommended + typescript-eslint recommended + @jupyter/eslint-plugin, with the React
// plugins for the .tsx views; formatting is Prettier's (.prettierrc), run as an ESLint rule.
import js from '@eslint/js';
import jupyterPlugin from '@jupyter/eslint-plugin';
import prettierRecommended from 'eslint-plugin-prettier/recommended';
import reactPlugin from 'eslint-plugin-react';
import reactHooksPlugin from 'eslint-plugin-react-hooks';
import { defineConfig, globalIgnores } from 'eslint/config';
import globals from 'globals';
import tseslint from 'typescript-eslint';

export default defineConfig([
  globalIgnores(['node_modules', 'lib', 'build', 'coverage', 'ui-tests', '**/*.d.ts']),
  js.configs.recommended,
  tseslint.configs.recommended,
  jupyterPlugin.configs.recommended,
  {
    plugins: { jupyter: jupyterPlugin },
    languageOptions: {
      globals: {
        ...globals.browser,
        ...globals.node
      }
    },
    rules: {
      // The extension is English-only and takes no ITranslator: its UI strings are not meant to
      // go through trans.__().
      'jupyter/no-untranslated-string': 'off',
      // Every module src/index.ts imports is used synchronously in activate() (the renderer
      // factory, the sidebar widget, the connections of the notebooks already open), which is
      // the case the rule's own message says to leave as a static import.
      'jupyter/prefer-lazy-imports': 'off'
    }
  },
  {
    files: ['**/*.ts', '**/*.tsx', '**/*.mts'],
    languageOptions: {
      parserOptions: {
        // tsconfig.json covers src/ only (it is the build's); this one adds test/ for the
        // type-aware rules of @jupyter/eslint-plugin.
        project: 'tsconfig.eslint.json',
        tsconfigRootDir: import.meta.dirname,
        sourceType: 'module'
      }
    },
    rules: {
      '@typescript-eslint/naming-convention': [
        'error',
        {
          selector: 'interface',
          format: ['PascalCase'],
          custom: {
            regex: '^I[A-Z]',
            match: true
          }
        }
      ],
      '@typescript-eslint/no-unused-vars': ['warn', { args: 'none' }],
      '@typescript-eslint/no-explicit-any': 'off',
      '@typescript-eslint/no-namespace': 'off',
      '@typescript-eslint/no-use-before-define': 'off',
      curly: ['error', 'all'],
      eqeqeq: 'error',
      'prefer-arrow-callback': 'error'
    }
  },
  {
    files: ['**/*.tsx'],
    ...reactPlugin.configs.flat.recommended,
    settings: { react: { version: 'detect' } }
  },
  {
    files: ['**/*.tsx'],
    plugins: { 'react-hooks': reactHooksPlugin },
    // The two classic hooks rules; the plugin's v7 `recommended` adds the React Compiler rules,
    // and this extension is not built with the compiler.
    rules: {
      'react-hooks/rules-of-hooks': 'error',
      'react-hooks/exhaustive-deps': 'warn'
    }
  },
  prettierRecommended
]);
