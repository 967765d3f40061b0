import type { OnnxModel } from './onnx-session.js';
import type { ClipTokenizer } from './tokenizer.js';
import type { TextEncoderPass } from './weighted-encoding.js';

// How SDXL conditions on text, shared by generation and training: hidden_states[-2] of both encoders side by side,
// and the second encoder's pooled `text_embeds`.

/** hidden_states[-2] of each encoder, and the second encoder's pooled `text_embeds`. */
export function sdxlEncoderPasses(tokenizers: readonly [ClipTokenizer, ClipTokenizer], encoders: readonly [OnnxModel, OnnxModel]): TextEncoderPass[] {
  return encoders.map((encoder, index) => {
    const hiddenName = penultimateHiddenState(encoder);
    const wantsPooled = index === 1;
    return {
      tokenizer: tokenizers[index]!,
      encode: async (inputIds: number[]) => {
        const result = await encoder.run(
          { input_ids: encoder.numberInput('input_ids', inputIds, [1, inputIds.length]) },
          wantsPooled ? [hiddenName, 'text_embeds'] : [hiddenName],
        );
        return { hidden: result[hiddenName]!, pooled: wantsPooled ? result['text_embeds']! : null };
      },
    };
  });
}

/** hidden_states[-2]: the outputs are named hidden_states.0 … hidden_states.N. */
function penultimateHiddenState(encoder: OnnxModel): string {
  const layers = encoder.outputNames
    .map((name) => /^hidden_states\.(\d+)$/.exec(name)?.[1])
    .filter((index): index is string => index !== undefined)
    .map(Number);
  if (layers.length < 2) {
    throw new Error(`${encoder.label} exposes no hidden_states.N outputs; export it with output_hidden_states`);
  }
  return `hidden_states.${Math.max(...layers) - 1}`;
}

export function concatLastAxis(parts: Float32Array[], rows: number): Float32Array {
  const widths = parts.map((part) => part.length / rows);
  const total = widths.reduce((a, b) => a + b, 0);
  const out = new Float32Array(rows * total);
  for (let r = 0; r < rows; r++) {
    let offset = r * total;
    parts.forEach((part, i) => {
      out.set(part.subarray(r * widths[i]!, (r + 1) * widths[i]!), offset);
      offset += widths[i]!;
    });
  }
  return out;
}

