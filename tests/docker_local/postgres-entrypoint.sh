#!/bin/sh
# First start: create the cluster, user and database from POSTGRES_USER/PASSWORD/DB, as the
# official image does; then serve with password authentication on POSTGRES_LISTEN (default
# all interfaces, as the official image) and PGPORT (default 5432). The engine test runs it
# on the host's network, so it listens on 127.0.0.1 and a free port there.
set -e
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  printf '%s\n' "$POSTGRES_PASSWORD" > /tmp/pwfile
  initdb -D "$PGDATA" -U "$POSTGRES_USER" --pwfile=/tmp/pwfile --auth-local=trust --auth-host=scram-sha-256
  rm /tmp/pwfile
  echo "host all all 0.0.0.0/0 scram-sha-256" >> "$PGDATA/pg_hba.conf"
  pg_ctl -D "$PGDATA" -w start -o "-c listen_addresses=''"
  [ "$POSTGRES_DB" = "postgres" ] || createdb -U "$POSTGRES_USER" "$POSTGRES_DB"
  pg_ctl -D "$PGDATA" -w stop
fi
exec postgres -D "$PGDATA" -c listen_addresses="${POSTGRES_LISTEN:-*}" -c port="${PGPORT:-5432}"
