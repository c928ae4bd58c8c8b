#!/usr/bin/env bash
# A throwaway PostgreSQL server for the tests that need one (tefb --db
# postgresql://...). Installs Debian's postgresql if no initdb is found (as
# root), creates a cluster under /tmp owned by the user that runs it
# ("postgres" when this runs as root), starts it on 127.0.0.1 and a Unix
# socket in the same folder, and prints its DSN on stdout.
#
#   bash scripts/postgres.sh          # start (or find running) and print the DSN
#   bash scripts/postgres.sh stop     # stop it and remove the cluster
#
# PARALLIO_PG_PORT picks the port (default 54329). Durability is off (fsync,
# full_page_writes): the data is thrown away.
set -euo pipefail
port=${PARALLIO_PG_PORT:-54329}
dir=/tmp/parallio-postgres-$port
database=hello_world

bin_dir() {
    local initdb
    initdb=$(command -v initdb 2>/dev/null || true)
    if [ -z "$initdb" ]; then
        initdb=$(ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n 1 || true)
    fi
    [ -n "$initdb" ] && dirname "$(readlink -f "$initdb")"
}

# Run a command as the cluster's owner: root may not run the server itself.
as_owner() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

bin=$(bin_dir || true)
if [ "${1:-}" = stop ]; then
    if [ -n "$bin" ] && [ -d "$dir" ]; then
        as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
    fi
    rm -rf "$dir"
    exit 0
fi

if [ -z "$bin" ]; then
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        echo "postgres: no PostgreSQL server found and cannot install one (need root and apt-get)" >&2
        exit 1
    fi
    echo "postgres: installing Debian's postgresql" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q postgresql >/dev/null 2>&1 ||
        { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q postgresql >/dev/null 2>&1; } || {
        echo "postgres: apt-get install postgresql failed" >&2
        exit 1
    }
    bin=$(bin_dir)
fi

if ! as_owner "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
    rm -rf "$dir"
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres: "$dir"
    as_owner "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 \
        >"$dir/initdb.log" 2>&1 || {
        echo "postgres: initdb failed:" >&2
        cat "$dir/initdb.log" >&2
        exit 1
    }
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
        -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off -c max_connections=200" \
        start >/dev/null || {
        echo "postgres: the server did not start:" >&2
        cat "$dir/server.log" >&2
        exit 1
    }
    as_owner "$bin/psql" -q -h "$dir" -p "$port" -U postgres -d postgres \
        -c "CREATE DATABASE $database" >/dev/null
fi
echo "postgresql://postgres@127.0.0.1:$port/$database"
