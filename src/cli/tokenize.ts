import { openSdxlModelFolder } from '../gpu/model-folder.js';
import { ClipTokenizer } from '../gpu/tokenizer.js';
import { modelOption, REPO_ALTERNATIVE } from './model-option.js';
import { parseOptions, UsageError, type OptionSpec } from './options.js';

export const TOKENIZE_USAGE = 'wrongbot tokenize [--model DIR] --text TEXT';
export const TOKENIZE_OPTIONS = {
  model: { type: 'string', value: 'DIR', description: `SDXL model folder whose two tokenizers are used, ${REPO_ALTERNATIVE} (default: MODEL_DIR)` },
  text: { type: 'string', value: 'TEXT', description: 'the text to tokenize (required)' },
} as const satisfies OptionSpec;

export async function runTokenize(argv: string[]): Promise<void> {
  const values = parseOptions(argv, TOKENIZE_OPTIONS);
  const folder = openSdxlModelFolder(modelOption(values.model).path);
  if (values.text === undefined) throw new UsageError('--text is required');
  const text = values.text;
  const [first, second] = await Promise.all([
    ClipTokenizer.fromDirectory(folder.paths.tokenizer),
    ClipTokenizer.fromDirectory(folder.paths.tokenizer2),
  ]);
  console.log(JSON.stringify({
    tokenizer: first.encodeForModel(text).inputIds,
    tokenizer_2: second.encodeForModel(text).inputIds,
  }));
}
