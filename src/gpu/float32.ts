// Exact float32 arithmetic in JS doubles, for code that must match PyTorch's CPU kernels bit for bit.

const f32 = Math.fround;

// Splitting a double with 2^28 + 1 keeps its top 25 significant bits, which is exactly the precision of a float32
// rounding midpoint.
const SPLIT_25_BITS = 2 ** 28 + 1;
// Far below a float32 half-ulp yet far above a double's rounding error, so a nudge of this relative size moves a
// midpoint to the correct side without crossing any other float32 rounding boundary.
const MIDPOINT_NUDGE = 2 ** -40;

/**
 * float32 fused multiply-add: a·b + c rounded once to float32, as the FMA3 instructions compute it.
 * a, b and c must be float32 values (results of Math.fround).
 */
export function fma32(a: number, b: number, c: number): number {
  // A product of two 24-bit significands fits a double's 53 bits, so only the sum can be inexact.
  const product = a * b;
  const sum = product + c;
  const rounded = f32(sum);
  if (rounded === sum) return rounded;
  // Rounding the double sum again to float32 can only go wrong when the sum sits exactly on a float32 midpoint:
  // any other float32 boundary between the exact sum and its double rounding would itself be a closer double.
  const spread = sum * SPLIT_25_BITS;
  if (spread - (spread - sum) !== sum) return rounded;
  const virtualC = sum - product;
  const error = (product - (sum - virtualC)) + (c - virtualC);
  if (error === 0) return rounded;
  return f32(sum + (error > 0 ? MIDPOINT_NUDGE : -MIDPOINT_NUDGE) * Math.abs(sum));
}

/** Round half to even, as numpy's `round` and torch's `round` do (Math.round rounds halves up). */
export function roundHalfEven(x: number): number {
  const nearest = Math.round(x);
  return nearest - x === 0.5 && nearest % 2 !== 0 ? nearest - 1 : nearest;
}
