/**
 * CRC-32C (Castagnoli), the checksum of frames on the wire and of records on disk: stronger than
 * CRC-32 for the burst errors storage and networks produce, and what iSCSI, ext4 and TigerBeetle
 * use. Slicing-by-8 in plain TypeScript.
 *
 * @module
 */

/** The CRC-32C (Castagnoli) polynomial, bit-reflected. */
const CRC32C_POLYNOMIAL_REFLECTED = 0x82f63b78;
/** One table entry per byte value. */
const CRC32C_TABLE_SIZE = 256;
/**
 * Bytes folded into the checksum per step (slicing-by-8): eight table look-ups per eight bytes
 * instead of eight dependent steps, about twice the speed of a byte at a time in V8.
 */
const CRC32C_SLICE_BYTES = 8;

/**
 * `CRC32C_SLICE_BYTES` tables of 256 entries, back to back. Table 0 is the classic byte-at-a-time
 * table; table k holds the CRC of a byte followed by k zero bytes, so that eight bytes can be
 * folded at once.
 */
function makeCrc32cTables(): Int32Array {
  const tables = new Int32Array(CRC32C_SLICE_BYTES * CRC32C_TABLE_SIZE);
  for (let byte = 0; byte < CRC32C_TABLE_SIZE; byte++) {
    let crc = byte;
    for (let bit = 0; bit < 8; bit++) {
      crc = crc & 1 ? (crc >>> 1) ^ CRC32C_POLYNOMIAL_REFLECTED : crc >>> 1;
    }
    tables[byte] = crc;
  }
  for (let byte = 0; byte < CRC32C_TABLE_SIZE; byte++) {
    let crc = tables[byte] as number;
    for (let slice = 1; slice < CRC32C_SLICE_BYTES; slice++) {
      crc = (tables[crc & 0xff] as number) ^ (crc >>> 8);
      tables[slice * CRC32C_TABLE_SIZE + byte] = crc;
    }
  }
  return tables;
}

const CRC32C_TABLES = makeCrc32cTables();

/** The state to start a running CRC-32C from (see `crc32cUpdate`). */
export const CRC32C_START = -1;

/** CRC-32C (Castagnoli, as in iSCSI and ext4) of `bytes`, as an unsigned 32-bit integer. */
export function crc32c(bytes: Uint8Array): number {
  return crc32cFinish(crc32cUpdate(CRC32C_START, bytes));
}

/** The checksum of a running CRC-32C state. */
export function crc32cFinish(state: number): number {
  return (state ^ -1) >>> 0;
}

/** Feeds `bytes` into a running CRC-32C state (start from `CRC32C_START`). */
export function crc32cUpdate(state: number, bytes: Uint8Array): number {
  const t = CRC32C_TABLES;
  const length = bytes.length;
  const sliced = length - (length % CRC32C_SLICE_BYTES);
  let crc = state | 0;
  let index = 0;
  // Indexed loops: for-of over a Uint8Array goes through the iterator protocol, many times
  // slower in V8, and this runs over every byte received. The table offsets are multiples of 256.
  for (; index < sliced; index += CRC32C_SLICE_BYTES) {
    const low = crc ^ ((bytes[index] as number) | ((bytes[index + 1] as number) << 8) |
      ((bytes[index + 2] as number) << 16) | ((bytes[index + 3] as number) << 24));
    crc = (t[1792 + (low & 0xff)] as number) ^ (t[1536 + ((low >>> 8) & 0xff)] as number) ^
      (t[1280 + ((low >>> 16) & 0xff)] as number) ^ (t[1024 + (low >>> 24)] as number) ^
      (t[768 + (bytes[index + 4] as number)] as number) ^
      (t[512 + (bytes[index + 5] as number)] as number) ^
      (t[256 + (bytes[index + 6] as number)] as number) ^ (t[bytes[index + 7] as number] as number);
  }
  for (; index < length; index++) {
    crc = (t[(crc ^ (bytes[index] as number)) & 0xff] as number) ^ (crc >>> 8);
  }
  return crc;
}
