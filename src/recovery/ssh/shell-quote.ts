// Quoting for arguments of commands that run through the remote user's login
// shell (sshd hands the command line to `$SHELL -c`). Single quotes are the
// only POSIX quoting with no special characters inside, so any byte string
// survives; a single quote itself is closed, escaped and reopened.

// Words made only of these need no quotes in any POSIX shell. '=' is left out
// so a quoted word can never turn into a variable assignment, '~' and glob
// characters because the shell would expand them.
const SAFE = /^[A-Za-z0-9_@%+:,./-]+$/;

export function shellQuote(arg: string): string {
  if (SAFE.test(arg)) return arg;
  return `'${arg.replace(/'/g, `'\\''`)}'`;
}

/** A command line from words, each quoted as needed. */
export function shellJoin(args: readonly string[]): string {
  return args.map(shellQuote).join(' ');
}
