// barman-cloud's --tag KEY,VALUE, read as one CSV record (cloud_cli.py's
// __parse_tag) so that a key or value holding a comma can be quoted: "a,b",c.
import { InvalidArgumentError } from 'commander';

export function parseTag(text: string): [string, string] {
  const fields: string[] = [];
  let field = '';
  let quoted = false;
  let wasQuoted = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i]!;
    if (quoted) {
      if (ch === '"' && text[i + 1] === '"') {
        field += '"';
        i++;
      } else if (ch === '"') {
        quoted = false;
      } else {
        field += ch;
      }
    } else if (ch === '"' && field === '' && !wasQuoted) {
      quoted = wasQuoted = true;
    } else if (ch === ',') {
      fields.push(field);
      field = '';
      wasQuoted = false;
    } else {
      field += ch;
    }
  }
  if (quoted) throw new InvalidArgumentError(`invalid tag '${text}': unterminated quote`);
  fields.push(field);
  if (fields.length !== 2 || fields[0] === '') throw new InvalidArgumentError(`invalid tag format '${text}': expected KEY,VALUE`);
  return [fields[0]!, fields[1]!];
}
