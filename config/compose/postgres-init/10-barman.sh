#!/bin/bash
# Run once by the postgres image's entrypoint when it initialises an empty
# data directory (docker-entrypoint-initdb.d): the role barkeep connects as,
# with the privileges of a non-superuser backup user, and its pg_hba line.
set -euo pipefail

: "${BARMAN_PASSWORD:?set BARMAN_PASSWORD for the barman role}"

# The password goes through a psql variable (:'barman_password'), so any
# character in it is quoted correctly.
psql -v ON_ERROR_STOP=1 -v barman_password="$BARMAN_PASSWORD" \
  --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-postgres}" <<'EOSQL'
CREATE ROLE barman LOGIN REPLICATION PASSWORD :'barman_password';
GRANT EXECUTE ON FUNCTION pg_backup_start(text, boolean), pg_backup_stop(boolean),
  pg_switch_wal(), pg_create_restore_point(text) TO barman;
GRANT pg_read_all_settings, pg_read_all_stats, pg_checkpoint TO barman;
EOSQL

# Replication connections of the barman role, from the compose network only
# ("samenet": the subnets this container is attached to). SQL connections
# are already allowed by the image's "host all all all scram-sha-256" line;
# "all" in the database column does not cover replication.
cat >> "$PGDATA/pg_hba.conf" <<'EOHBA'
host  replication  barman  samenet  scram-sha-256
EOHBA
