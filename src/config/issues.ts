// A configuration problem, located as precisely as the input allows, so the
// one-line message always names the file, the line, the section and the key.

export interface ConfigIssue {
  level: 'error' | 'warning';
  file?: string;
  line?: number;
  section?: string;
  key?: string;
  message: string;
}

export function formatIssue(issue: ConfigIssue): string {
  let where = issue.file ?? '';
  if (issue.file && issue.line !== undefined) where += `:${issue.line}`;
  const parts: string[] = [];
  if (where) parts.push(`${where}:`);
  if (issue.section !== undefined) parts.push(`[${issue.section}]`);
  if (issue.key !== undefined) parts.push(`${issue.key}:`);
  parts.push(issue.message);
  return parts.join(' ');
}
