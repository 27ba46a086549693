/**
 * kernel-bridge for JupyterLab: the trace renderer and the sidebar.
 *
 * - `kernel-bridge:renderer` draws `application/vnd.kernel-bridge.trace+json` outputs.
 * - `kernel-bridge:plugin` adds the sidebar, which follows the active notebook, and owns the
 *   settings (schema/plugin.json): default model, isolation, max steps, show thinking. The
 *   `%%reason` defaults in that schema are written from kernel_bridge/settings.py
 *   (scripts/sync_from_python.py); the code reads them from the schema, never from constants here.
 */
import { ILayoutRestorer, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';
import { IEditorLanguageRegistry } from '@jupyterlab/codemirror';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { IRenderMimeRegistry } from '@jupyterlab/rendermime';
import { Kernel } from '@jupyterlab/services';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { LabIcon } from '@jupyterlab/ui-components';
import { JSONExt } from '@lumino/coreutils';

import { NotebookConnection } from './connection';
import { applySettings } from './kernelactions';
import { allTraces, NotebookTraces } from './model';
import { traceRendererFactory } from './renderer';
import { renderServices } from './services';
import { TraceSidebar } from './sidebarwidget';

const PLUGIN_ID = 'kernel-bridge:plugin';

/** The settings, as schema/plugin.json defines them. */
export interface ISettings {
  defaultModel: string;
  isolated: boolean;
  maxSteps: number;
  showThinking: boolean;
}

/** The settings that are `%%reason` defaults in each kernel, by the name `apply_settings` takes. */
const KERNEL_SETTINGS: [keyof ISettings, string][] = [
  ['defaultModel', 'model'],
  ['isolated', 'isolated'],
  ['maxSteps', 'max_steps']
];

/** The settings once loaded from the registry; until then thinking shows expanded. */
let settings: ISettingRegistry.ISettings | null = null;
let showThinking = true;

/** The sidebar's tab: a speech bubble with a spark, "ask the model", bold enough to find. */
export const traceIcon = new LabIcon({
  name: 'kernel-bridge:trace',
  svgstr:
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" width="16" height="16">' +
    '<g class="jp-icon3" fill="#616161">' +
    '<path fill-rule="evenodd" d="M4 2.5h16A2.5 2.5 0 0 1 22.5 5v11a2.5 2.5 0 0 1-2.5 2.5h-7.6' +
    'L7 22.5v-4H4A2.5 2.5 0 0 1 1.5 16V5A2.5 2.5 0 0 1 4 2.5zm0 2.2a.3.3 0 0 0-.3.3v11' +
    'c0 .17.13.3.3.3h5.2v2.4l3.1-2.4H20a.3.3 0 0 0 .3-.3V5a.3.3 0 0 0-.3-.3z"/>' +
    '<path d="M12 5.6l1.35 3.3 3.3 1.35-3.3 1.35L12 14.9l-1.35-3.3-3.3-1.35 3.3-1.35z"/>' +
    '</g></svg>'
});

const rendererPlugin: JupyterFrontEndPlugin<void> = {
  id: 'kernel-bridge:renderer',
  description: 'Renders kernel-bridge traces in notebook outputs.',
  autoStart: true,
  requires: [IRenderMimeRegistry],
  optional: [IEditorLanguageRegistry],
  activate: (
    app: JupyterFrontEnd,
    rendermime: IRenderMimeRegistry,
    languages: IEditorLanguageRegistry | null
  ) => {
    rendermime.addFactory(
      traceRendererFactory(
        trusted => renderServices(rendermime, languages, trusted),
        () => showThinking,
        allTraces
      ),
      50
    );
  }
};

const sidebarPlugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'The kernel-bridge sidebar: live trace, history, stop, insert, export, feedback.',
  autoStart: true,
  requires: [INotebookTracker, IRenderMimeRegistry],
  optional: [ILayoutRestorer, ISettingRegistry, IEditorLanguageRegistry, ICommandPalette],
  activate: (
    app: JupyterFrontEnd,
    tracker: INotebookTracker,
    rendermime: IRenderMimeRegistry,
    restorer: ILayoutRestorer | null,
    settingRegistry: ISettingRegistry | null,
    languages: IEditorLanguageRegistry | null,
    palette: ICommandPalette | null
  ) => {
    const services = renderServices(rendermime, languages, false);
    const sidebar = new TraceSidebar(services, showThinking);
    sidebar.title.icon = traceIcon;
    app.shell.add(sidebar, 'right', { rank: 650 });
    restorer?.add(sidebar, sidebar.id);

    const connections = new Map<NotebookPanel, NotebookConnection>();
    // At kernel start only settings changed from their defaults (the schema's, which are the
    // kernel's) are applied, so an IPython config file (c.ReasonMagics...) still counts; a change
    // in the settings editor applies them all. Before the settings load, nothing is applied.
    let changedByUser = false;
    const kernelSettings = () => {
      const values: { [key: string]: unknown } = {};
      if (!settings) {
        return values;
      }
      for (const [key, name] of KERNEL_SETTINGS) {
        const value = settings.composite[key] ?? null;
        if (changedByUser || !JSONExt.deepEqual(value, settings.default(key) ?? null)) {
          values[name] = value;
        }
      }
      return values;
    };
    // Every Python kernel also hears that the extension is attached (`live_view`): a running
    // %%reason cell then holds one live view, drawn from the comm the sidebar reads anyway,
    // instead of streaming a second copy of the run.
    const apply = (kernel: Kernel.IKernelConnection) => {
      applySettings(kernel, { ...kernelSettings(), live_view: true }).catch(error =>
        // A Python kernel without kernel_bridge: nothing to configure.
        console.debug('kernel-bridge: settings not applied', error)
      );
    };
    const connect = (panel: NotebookPanel) => {
      if (!connections.has(panel)) {
        connections.set(panel, new NotebookConnection(panel, new NotebookTraces(), apply));
        panel.disposed.connect(() => {
          connections.get(panel)?.dispose();
          connections.delete(panel);
          if (sidebar.connection?.panel === panel) {
            sidebar.connection = null;
          }
        });
      }
      return connections.get(panel)!;
    };
    tracker.widgetAdded.connect((_, panel) => connect(panel));
    tracker.forEach(panel => connect(panel));
    const follow = () => {
      const panel = tracker.currentWidget;
      sidebar.connection = panel ? connect(panel) : null;
    };
    tracker.currentChanged.connect(follow);
    follow();

    const command = 'kernel-bridge:open-sidebar';
    app.commands.addCommand(command, {
      label: 'Show kernel-bridge traces',
      describedBy: { args: { type: 'object', properties: {} } },
      execute: () => app.shell.activateById(sidebar.id)
    });
    palette?.addItem({ command, category: 'kernel-bridge' });

    if (settingRegistry) {
      const load = (loaded: ISettingRegistry.ISettings) => {
        settings = loaded;
        showThinking = loaded.composite.showThinking as boolean;
        sidebar.showThinking = showThinking;
        const maxSteps = loaded.composite.maxSteps as number;
        const defaultMaxSteps = loaded.default('maxSteps') as number;
        sidebar.setAskDefaults(
          {
            model: loaded.composite.defaultModel as string,
            isolated: loaded.composite.isolated as boolean,
            maxSteps: maxSteps === defaultMaxSteps ? null : maxSteps
          },
          defaultMaxSteps
        );
        for (const connection of connections.values()) {
          const kernel = connection.kernel;
          if (kernel) {
            apply(kernel);
          }
        }
      };
      settingRegistry
        .load(PLUGIN_ID)
        .then(loaded => {
          load(loaded);
          loaded.changed.connect(() => {
            changedByUser = true;
            load(loaded);
          });
        })
        .catch(error => console.error('kernel-bridge: cannot load settings', error));
    }
  }
};

export default [rendererPlugin, sidebarPlugin];
