// Runs an async job per item with at most `concurrency` in flight: enough to keep
// the disk and a second core busy without opening thousands of files at once.
export async function runLimited<T>(items: Iterable<T>, concurrency: number, job: (item: T) => Promise<void>): Promise<void> {
  const iterator = items[Symbol.iterator]();
  const worker = async (): Promise<void> => {
    for (let next = iterator.next(); !next.done; next = iterator.next()) await job(next.value);
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.floor(concurrency)) }, worker));
}
