// A reproducible shuffle: the same seed puts the same items in the same order on any machine, so an order can be
// recorded as its seed and checked later. Not for secrets: anyone who knows a seed knows its order.

/** Seeds are 32-bit: larger ones would share orders with their remainder. */
export const MAX_SHUFFLE_SEED = 2 ** 32 - 1;

/** 32 well-mixed bits from any 32-bit integer (the finaliser of MurmurHash3). */
export function mixSeed(value: number): number {
  let mixed = value >>> 0;
  mixed = Math.imul(mixed ^ (mixed >>> 16), 0x85ebca6b);
  mixed = Math.imul(mixed ^ (mixed >>> 13), 0xc2b2ae35);
  return (mixed ^ (mixed >>> 16)) >>> 0;
}

/** The seed of the `index`-th draw of a sequence started from `seed`: each index gets its own unrelated seed. */
export function seedAt(seed: number, index: number): number {
  return mixSeed(mixSeed(seed) ^ mixSeed(index + 0x9e3779b9));
}

/** Fisher–Yates, each swap chosen by the next draw of a counter-based generator on `seed`. */
export function seededShuffle<T>(items: readonly T[], seed: number): T[] {
  const shuffled = [...items];
  for (let last = shuffled.length - 1; last > 0; last--) {
    const draw = seedAt(seed, last) / 2 ** 32;
    const pick = Math.floor(draw * (last + 1));
    [shuffled[last], shuffled[pick]] = [shuffled[pick]!, shuffled[last]!];
  }
  return shuffled;
}
