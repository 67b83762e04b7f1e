import { release, type as osType, hostname } from 'node:os';
import { formatIssue } from '../../config/issues.ts';
import { isSecretKey } from '../../config/keys.ts';
import { maskConninfo } from '../../postgres/conninfo.ts';
import { probeServer } from '../../postgres/probe.ts';
import { VERSION } from '../version.ts';
import type { CliContext } from '../context.ts';

// `barkeep diagnose`: one JSON document for support requests. Every secret
// is masked: conninfo passwords and keys marked secret.

export async function runDiagnose(ctx: CliContext): Promise<number> {
  const servers: Record<string, unknown> = {};
  await Promise.all(
    [...ctx.config.servers.values()].map(async (s) => {
      const config: Record<string, unknown> = {};
      for (const [key, text] of Object.entries(s.text)) {
        config[key] = isSecretKey(key) ? (key.endsWith('conninfo') ? maskConninfo(text) : '***') : text;
      }
      const probe = s.settings.active === false ? null : await probeServer({
        conninfo: s.settings.conninfo,
        streamingConninfo: s.settings.streaming_conninfo,
        slotName: s.settings.slot_name,
        timeoutSeconds: Math.min(s.settings.check_timeout ?? 30, 10),
      });
      servers[s.name] = {
        config,
        disabled: s.disabled,
        issues: s.issues.map((i) => ({ level: i.level, message: formatIssue(i) })),
        postgresql: probe && {
          version: probe.info?.serverTxtVersion ?? null,
          version_num: probe.info?.serverVersion ?? null,
          system_id: probe.info?.systemId ?? probe.streamingSystemId,
          is_in_recovery: probe.info?.isInRecovery ?? null,
          connection_error: probe.connectionError,
          streaming_error: probe.streamingError,
          replication_slot: probe.slot,
        },
      };
    }),
  );
  const ordered = Object.fromEntries(Object.keys(servers).sort().map((k) => [k, servers[k]]));
  ctx.printJson({
    global: {
      config: ctx.config.globalText,
      config_files: ctx.config.files,
      issues: ctx.config.issues.map((i) => ({ level: i.level, message: formatIssue(i) })),
      system_info: {
        barkeep_version: VERSION,
        node_version: process.version,
        os: `${osType()} ${release()}`,
        arch: process.arch,
        hostname: hostname(),
        user: process.env['USER'] ?? null,
        timestamp: new Date().toISOString(),
      },
    },
    servers: ordered,
  });
  return 0;
}
