// A one-line progress display for long copies (backup, recover), on stderr
// and only on a terminal: scripts and logs stay clean.
import { prettySize } from '../util/human.ts';
import type { CliContext } from './context.ts';

/** A one-line progress display on a terminal; nothing otherwise or with -q. */
export function progressLine(ctx: CliContext, verb = 'copied'): { update: (done: number, total: number) => void; clear: () => void } {
  const tty = process.stderr.isTTY === true && !ctx.opts.quiet;
  const started = Date.now();
  let last = 0;
  let shown = false;
  return {
    update(done, total) {
      if (!tty || Date.now() - last < 200) return;
      last = Date.now();
      const rate = done / Math.max(0.001, (Date.now() - started) / 1000);
      const pct = total > 0 ? ` ${Math.min(100, (done / total) * 100).toFixed(0)}%` : '';
      const eta = total > done && rate > 0 ? `, ETA ${Math.ceil((total - done) / rate)} s` : '';
      process.stderr.write(`\r\x1b[K  ${verb} ${prettySize(done)}${total ? ` of ~${prettySize(total)}` : ''}${pct} (${prettySize(rate)}/s${eta})`);
      shown = true;
    },
    clear() {
      if (shown) process.stderr.write('\r\x1b[K');
      shown = false;
    },
  };
}
