// --bwlimit: a token bucket shared by every lane of a restore, so the limit
// holds for the whole transfer as rsync's does for one.
import { setTimeout as sleep } from 'node:timers/promises';

export class Throttle {
  readonly #bytesPerSecond: number;
  #available: number;
  #last = performance.now();

  /** `kbps` as rsync's --bwlimit: units of 1024 bytes per second. */
  constructor(kbps: number) {
    this.#bytesPerSecond = kbps * 1024;
    // A small burst only: a long idle pause must not allow a flood.
    this.#available = this.#bytesPerSecond / 10;
  }

  async take(bytes: number): Promise<void> {
    for (;;) {
      const now = performance.now();
      this.#available = Math.min(this.#bytesPerSecond / 10, this.#available + ((now - this.#last) / 1000) * this.#bytesPerSecond);
      this.#last = now;
      if (this.#available >= Math.min(bytes, this.#bytesPerSecond / 10)) {
        this.#available -= bytes;
        return;
      }
      const wait = ((Math.min(bytes, this.#bytesPerSecond / 10) - this.#available) / this.#bytesPerSecond) * 1000;
      await sleep(Math.max(1, Math.ceil(wait)));
    }
  }
}
