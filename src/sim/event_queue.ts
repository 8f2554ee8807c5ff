/**
 * The simulator's priority queue: a binary min-heap of items ordered by time, then by insertion
 * order, so that events scheduled for the same time come out first-in first-out and a run never
 * depends on how the heap happens to break ties.
 *
 * @module
 */

/** What `EventQueue.pop` returns. */
export interface EventQueueEntry<T> {
  readonly time: number;
  readonly item: T;
}

/**
 * A min-heap keyed by (time, insertion sequence).
 *
 * The heap is stored as three parallel arrays rather than an array of entry objects, so that
 * `push` allocates nothing once the arrays have grown, which matters at millions of events per
 * sweep. Insertion sequence numbers come from a counter that would need 2^53 pushes to lose
 * precision.
 */
export class EventQueue<T> {
  readonly #times: number[] = [];
  readonly #sequences: number[] = [];
  readonly #items: T[] = [];
  #nextSequence = 0;
  /** The single object `pop` fills in; see `pop` for why it is reused. */
  readonly #result: { time: number; item: T | undefined } = { time: 0, item: undefined };

  /** Schedule `item` at `time` (any number but NaN). */
  push(time: number, item: T): void {
    if (time !== time) throw new RangeError("EventQueue.push: time must not be NaN");
    const times = this.#times;
    const sequences = this.#sequences;
    const items = this.#items;
    const sequence = this.#nextSequence++;
    let index = times.length;
    times.push(time);
    sequences.push(sequence);
    items.push(item);
    // Sift up. The new sequence number exceeds every stored one, so a parent with an equal time
    // always stays above the new entry.
    while (index > 0) {
      const parent = (index - 1) >> 1;
      const parentTime = times[parent] as number;
      if (parentTime <= time) break;
      times[index] = parentTime;
      sequences[index] = sequences[parent] as number;
      items[index] = items[parent] as T;
      index = parent;
    }
    times[index] = time;
    sequences[index] = sequence;
    items[index] = item;
  }

  /**
   * Remove and return the earliest entry, or undefined when empty.
   *
   * The returned object is reused: the next `pop` overwrites it. Read `time` and `item` before
   * popping again, and copy them if they must outlive that. This keeps the hot loop of the
   * simulator free of one allocation per event.
   */
  pop(): EventQueueEntry<T> | undefined {
    const times = this.#times;
    const size = times.length;
    if (size === 0) return undefined;
    const sequences = this.#sequences;
    const items = this.#items;
    const result = this.#result;
    result.time = times[0] as number;
    result.item = items[0];
    const lastTime = times.pop() as number;
    const lastSequence = sequences.pop() as number;
    const lastItem = items.pop() as T;
    const remaining = size - 1;
    if (remaining > 0) {
      // Sift the former last entry down from the root, moving the smaller child up each step.
      let index = 0;
      for (;;) {
        let child = 2 * index + 1;
        if (child >= remaining) break;
        let childTime = times[child] as number;
        let childSequence = sequences[child] as number;
        const right = child + 1;
        if (right < remaining) {
          const rightTime = times[right] as number;
          const rightSequence = sequences[right] as number;
          if (rightTime < childTime || (rightTime === childTime && rightSequence < childSequence)) {
            child = right;
            childTime = rightTime;
            childSequence = rightSequence;
          }
        }
        if (lastTime < childTime || (lastTime === childTime && lastSequence < childSequence)) {
          break;
        }
        times[index] = childTime;
        sequences[index] = childSequence;
        items[index] = items[child] as T;
        index = child;
      }
      times[index] = lastTime;
      sequences[index] = lastSequence;
      items[index] = lastItem;
    }
    return result as EventQueueEntry<T>;
  }

  /** The time of the earliest entry, or undefined when empty. */
  peekTime(): number | undefined {
    return this.#times[0];
  }

  /** The number of entries. */
  get size(): number {
    return this.#times.length;
  }

  /** Remove every entry and restart the insertion sequence. */
  clear(): void {
    this.#times.length = 0;
    this.#sequences.length = 0;
    this.#items.length = 0;
    this.#nextSequence = 0;
    // Drop the reference held by the reused result so cleared items can be collected.
    this.#result.item = undefined;
  }
}
