// The shapes that LoRA loading and the UNet graph rewrite agree on.

/** A projection in the ONNX UNet that a LoRA may target: a MatMul whose weight is an initializer holding Wᵀ. */
export interface LoraTarget {
  /** diffusers module path, e.g. `down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q`. */
  module: string;
  /** The MatMul node's name in the graph, e.g. `/down_blocks.1/attentions.0/transformer_blocks.0/attn1/to_q/MatMul`. */
  nodeName: string;
  inFeatures: number;
  outFeatures: number;
}

/** One module's low-rank update ΔW = scale · up · down, ready to add to the graph. */
export interface LoraModule {
  module: string;
  rank: number;
  inFeatures: number;
  outFeatures: number;
  /** [rank, inFeatures], row-major. */
  down: Float32Array;
  /** [outFeatures, rank], row-major. */
  up: Float32Array;
  /** alpha / rank (alpha = rank when the file stores none). The user's strength is applied at run time. */
  scale: number;
}

/** A key of the file that was not applied, and why: the user is told instead of the key vanishing. */
export interface SkippedLoraKey {
  key: string;
  reason: string;
}

export interface LoadedLora {
  path: string;
  modules: LoraModule[];
  skipped: SkippedLoraKey[];
}
