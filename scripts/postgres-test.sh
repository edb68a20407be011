#!/usr/bin/env bash
# Install (Debian's postgresql), start and prepare a PostgreSQL for the store's tests; prints the URL to put in
# BLOODCELL_TEST_POSTGRES_URL. Idempotent: reuses the cluster, role and database when they exist. Needs root.
# The role's password only guards a throw-away test database on this machine's loopback address.
set -euo pipefail
ROLE=bloodcell_test
DATABASE=bloodcell_test
PASSWORD=bloodcell-test-only
if ! command -v pg_lsclusters >/dev/null 2>&1 || [ -z "$(ls /usr/lib/postgresql 2>/dev/null)" ]; then
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
fi
VERSION="$(ls /usr/lib/postgresql | sort -V | tail -n 1)"
if ! pg_lsclusters -h | awk '{print $1" "$2}' | grep -qx "$VERSION main"; then
  pg_createcluster "$VERSION" main >&2
fi
# The suite's services and stores hold pooled connections until their objects go (about 100 at its peak): room for
# three times that, set before the cluster starts (a running one is restarted once to take it).
CONNECTIONS=300
if [ "$(pg_conftool "$VERSION" main show max_connections 2>/dev/null | awk -F' = ' '{print $2}')" != "$CONNECTIONS" ]; then
  pg_conftool "$VERSION" main set max_connections "$CONNECTIONS" >&2
  if pg_lsclusters -h | awk '$1=="'"$VERSION"'" && $2=="main" {print $4}' | grep -qx online; then
    pg_ctlcluster "$VERSION" main restart >&2
  fi
fi
if ! pg_lsclusters -h | awk '$1=="'"$VERSION"'" && $2=="main" {print $4}' | grep -qx online; then
  pg_ctlcluster "$VERSION" main start >&2
fi
PORT="$(pg_lsclusters -h | awk '$1=="'"$VERSION"'" && $2=="main" {print $3}')"
as_postgres() { runuser -u postgres -- psql -p "$PORT" -v ON_ERROR_STOP=1 -qtA "$@"; }
if [ "$(as_postgres -c "SELECT 1 FROM pg_roles WHERE rolname='$ROLE'")" != "1" ]; then
  as_postgres -c "CREATE ROLE $ROLE LOGIN PASSWORD '$PASSWORD'" >&2
fi
if [ "$(as_postgres -c "SELECT 1 FROM pg_database WHERE datname='$DATABASE'")" != "1" ]; then
  as_postgres -c "CREATE DATABASE $DATABASE OWNER $ROLE" >&2
fi
echo "postgresql://$ROLE:$PASSWORD@127.0.0.1:$PORT/$DATABASE"
