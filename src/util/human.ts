// Human-readable sizes and durations, printed exactly as Barman prints them
// so that scripts parsing Barman's output keep working.

export function prettySize(bytes: number, unit: 1000 | 1024 = 1024): string {
  const suffixes = ['B', ...'KMGTPEZY'.split('').map((p) => (unit === 1024 ? `${p}iB` : `${p}B`))];
  if (unit === 1000) suffixes[1] = 'kB';
  let size = bytes;
  for (let i = 0; i < suffixes.length; i++) {
    if (Math.abs(size) < unit || i === suffixes.length - 1) {
      return i === 0 ? `${Math.trunc(size)} ${suffixes[0]}` : `${size.toFixed(1)} ${suffixes[i]}`;
    }
    size /= unit;
  }
  return `${bytes} B`;
}

export function humanTimedelta(seconds: number): string {
  const delta = Math.abs(seconds);
  const days = Math.floor(delta / 86400);
  const rest = Math.floor(delta - days * 86400);
  const parts: string[] = [];
  const add = (n: number, word: string) => {
    if (n > 0) parts.push(`${n} ${word}${n === 1 ? '' : 's'}`);
  };
  add(days, 'day');
  add(Math.floor(rest / 3600), 'hour');
  add(Math.floor(rest / 60) % 60, 'minute');
  add(rest % 60, 'second');
  let human = parts.join(', ');
  if (delta < 1) human = 'less than one second';
  if (seconds < 0) human += ' ago';
  return human;
}

const DAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

/** Python's time.ctime() in local time: "Sat Nov 21 16:05:03 2026". */
export function ctime(date: Date): string {
  const p = (n: number) => String(n).padStart(2, '0');
  return `${DAYS[date.getDay()]} ${MONTHS[date.getMonth()]} ${String(date.getDate()).padStart(2, ' ')} ${p(date.getHours())}:${p(date.getMinutes())}:${p(date.getSeconds())} ${date.getFullYear()}`;
}
