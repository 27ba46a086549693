/**
 * The JupyterLab side of `IRenderServices`: outputs through an output area and the rendermime
 * registry (images, HTML, errors as JupyterLab shows them), code highlighted by the editor's
 * language registry, Markdown through the Markdown renderer.
 */
import { IEditorLanguageRegistry } from '@jupyterlab/codemirror';
import * as nbformat from '@jupyterlab/nbformat';
import { OutputAreaModel, SimplifiedOutputArea } from '@jupyterlab/outputarea';
import { IRenderMimeRegistry, MimeModel } from '@jupyterlab/rendermime';
import { MessageLoop } from '@lumino/messaging';
import { Widget } from '@lumino/widgets';

import { IRenderServices } from './traceview';
import { IOutputJSON } from './types';

export function renderServices(
  rendermime: IRenderMimeRegistry,
  languages: IEditorLanguageRegistry | null,
  trusted: boolean
): IRenderServices {
  const python = languages?.findBest('python') ?? null;
  return {
    renderOutputs(outputs: IOutputJSON[], host: HTMLElement): () => void {
      const model = new OutputAreaModel({ trusted });
      model.fromJSON(outputs as unknown as nbformat.IOutput[]);
      const area = new SimplifiedOutputArea({ model, rendermime });
      area.addClass('kb-OutputArea');
      const unmount = mount(area, host);
      return () => {
        unmount();
        model.dispose();
      };
    },
    highlight(code: string, host: HTMLElement): void {
      if (!languages) {
        host.textContent = code;
        return;
      }
      const target = document.createElement('span');
      host.dataset.code = code;
      void languages.highlight(code, python, target).then(() => {
        if (host.dataset.code === code) {
          host.replaceChildren(...Array.from(target.childNodes));
        }
      });
    },
    renderMarkdown(text: string, host: HTMLElement): () => void {
      const renderer = rendermime.createRenderer('text/markdown');
      const unmount = mount(renderer, host);
      void renderer.renderModel(new MimeModel({ data: { 'text/markdown': text }, trusted: false }));
      return unmount;
    }
  };
}

/**
 * Put a widget into a DOM node React owns, and take it out again. Unlike `Widget.attach` this
 * works while the host is not in the document yet (a renderer draws before its output is shown)
 * and after React removed it.
 */
function mount(widget: Widget, host: HTMLElement): () => void {
  MessageLoop.sendMessage(widget, Widget.Msg.BeforeAttach);
  host.appendChild(widget.node);
  MessageLoop.sendMessage(widget, Widget.Msg.AfterAttach);
  return () => {
    if (widget.isAttached) {
      MessageLoop.sendMessage(widget, Widget.Msg.BeforeDetach);
      widget.node.remove();
      MessageLoop.sendMessage(widget, Widget.Msg.AfterDetach);
    }
    widget.dispose();
  };
}
