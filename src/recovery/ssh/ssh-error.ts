// Connection, authentication, host key and channel failures of an SSH session:
// one line naming the host. Its own module so code that only reports these does
// not load the SSH library.
export class SshError extends Error {}
