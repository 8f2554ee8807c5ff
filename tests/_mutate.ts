/**
 * Property-test input for the hand-written decoders: valid encodings with a few bytes changed, a
 * few cut off or a few zeros added. A fast decoder must decline such bytes or decode them exactly
 * as the general one does, or replicas could disagree on what they mean.
 *
 * @module
 */
import fc from "fast-check";

/** `valid` with up to three bytes overwritten, then up to three bytes cut or added. */
export function mutatedBytes(valid: fc.Arbitrary<Uint8Array>): fc.Arbitrary<Uint8Array> {
  return fc.tuple(
    valid,
    fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 3 }),
    fc.integer({ min: -3, max: 3 }),
  ).map(([bytes, changes, resize]) => {
    let out = bytes.slice();
    for (const [index, byte] of changes) if (out.length > 0) out[index % out.length] = byte;
    if (resize < 0) out = out.subarray(0, Math.max(0, out.length + resize));
    if (resize > 0) {
      const longer = new Uint8Array(out.length + resize);
      longer.set(out);
      out = longer;
    }
    return out;
  });
}
