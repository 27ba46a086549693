/**
 * The sidebar's ask box: a question typed here becomes a `%%reason` cell below the active cell,
 * with the box's model and options, and runs; the notebook stays the record of every run.
 */
import * as React from 'react';

/** The options the ask box writes into the `%%reason` line (empty: the kernel's default). */
export interface IAskOptions {
  /** Model string (`--model`); '' leaves the kernel's default. */
  model: string;
  /** `--isolated`: run the model's code in a sidecar kernel. */
  isolated: boolean;
  /** `--max-steps`; null leaves the kernel's default. */
  maxSteps: number | null;
}

/** A word for IPython's `%%reason` line, quoted as a POSIX shell would read it (shlex). */
export function shellWord(word: string): string {
  return /^[\w@%+=:,./~-]+$/.test(word) ? word : `'${word.replace(/'/g, `'"'"'`)}'`;
}

/** The source of the cell the ask box inserts. */
export function reasonSource(question: string, options: IAskOptions): string {
  const args = ['%%reason'];
  if (options.model.trim()) {
    args.push('--model', shellWord(options.model.trim()));
  }
  if (options.isolated) {
    args.push('--isolated');
  }
  if (options.maxSteps !== null) {
    args.push('--max-steps', String(options.maxSteps));
  }
  return `${args.join(' ')}\n${question.trim()}`;
}

export interface IAskBoxProps {
  /** The options as the settings give them; the box starts from them and follows their changes. */
  defaults: IAskOptions;
  /** The default of `--max-steps`, shown while the box leaves it to the kernel. */
  defaultMaxSteps: number | null;
  /** Insert the cell and run it; resolves once it is queued. */
  onAsk: (question: string, options: IAskOptions) => Promise<void>;
  disabled?: boolean;
}

export function AskBox(props: IAskBoxProps): JSX.Element {
  const { defaults, defaultMaxSteps, onAsk, disabled = false } = props;
  const [question, setQuestion] = React.useState('');
  const [options, setOptions] = React.useState<IAskOptions>(defaults);
  const [sending, setSending] = React.useState(false);
  React.useEffect(() => setOptions(defaults), [defaults]);

  const ask = () => {
    if (!question.trim() || sending || disabled) {
      return;
    }
    setSending(true);
    onAsk(question, options).then(
      () => {
        setQuestion('');
        setSending(false);
      },
      () => setSending(false) // the sidebar reports the error; the question stays to retry
    );
  };

  return (
    <form
      className="kb-Ask"
      aria-label="Ask the model"
      onSubmit={event => {
        event.preventDefault();
        ask();
      }}
    >
      <textarea
        className="kb-Ask-question"
        rows={2}
        value={question}
        disabled={disabled}
        placeholder="Ask a question… (Enter runs it in a new %%reason cell, Shift+Enter: new line)"
        aria-label="Question"
        onChange={event => setQuestion(event.target.value)}
        onKeyDown={event => {
          if (event.key === 'Enter' && !event.shiftKey && !event.nativeEvent.isComposing) {
            event.preventDefault();
            ask();
          }
        }}
      />
      <div className="kb-Ask-row">
        <details className="kb-Ask-options">
          <summary title="The %%reason options the new cell gets">
            {options.model.trim() || 'default model'}
            {options.isolated ? ' · isolated' : ''}
            {options.maxSteps !== null ? ` · ${options.maxSteps} steps` : ''}
          </summary>
          <label className="kb-Ask-field">
            Model
            <input
              type="text"
              value={options.model}
              placeholder="the kernel's default"
              aria-label="Model"
              onChange={event => setOptions({ ...options, model: event.target.value })}
            />
          </label>
          <label className="kb-Ask-field">
            <input
              type="checkbox"
              checked={options.isolated}
              aria-label="Isolated"
              onChange={event => setOptions({ ...options, isolated: event.target.checked })}
            />
            Isolated (a sidecar kernel)
          </label>
          <label className="kb-Ask-field">
            Max steps
            <input
              type="number"
              min={1}
              value={options.maxSteps ?? ''}
              placeholder={defaultMaxSteps === null ? 'default' : String(defaultMaxSteps)}
              aria-label="Max steps"
              onChange={event => {
                const value = parseInt(event.target.value, 10);
                setOptions({ ...options, maxSteps: value >= 1 ? value : null });
              }}
            />
          </label>
        </details>
        <button
          type="submit"
          className="kb-Button kb-Ask-send"
          disabled={disabled || sending || !question.trim()}
          aria-label="Ask"
          title="Insert a %%reason cell below the active cell and run it (Enter)"
        >
          Ask
        </button>
      </div>
    </form>
  );
}
