import { openSdxlModelFolder } from '../gpu/model-folder.js';
import { ClipTokenizer } from '../gpu/tokenizer.js';
import { optionOrEnvironment, parseOptions, UsageError } from './options.js';

export const TOKENIZE_USAGE = 'wrongbot tokenize [--model DIR] --text TEXT';

export async function runTokenize(argv: string[]): Promise<void> {
  const values = parseOptions(argv, { model: { type: 'string' }, text: { type: 'string' } });
  const folder = openSdxlModelFolder(optionOrEnvironment('model', values.model, 'MODEL_DIR'));
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
