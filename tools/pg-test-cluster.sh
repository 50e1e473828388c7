#!/bin/sh
# pg-test-cluster.sh - a throwaway PostgreSQL 15 cluster for tests, on 127.0.0.1 only.
#
#   tools/pg-test-cluster.sh start DIR   creates and starts a cluster in DIR, creates the
#                                        database `jiankang` and prints its URL on stdout
#   tools/pg-test-cluster.sh stop DIR    stops it and removes DIR
#
# Trust authentication, TCP on 127.0.0.1 only (no Unix socket), fsync and synchronous_commit
# on, as in production. As root, the server runs as the `postgres` system user (PostgreSQL
# refuses to run as root); if that user cannot reach DIR, the data lives in a mktemp
# directory under /tmp that DIR points to. The server log is DIR/server.log.
set -eu

PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
MARK=.jk-pg-test-cluster
DB=jiankang

die() {
    echo "pg-test-cluster: $*" >&2
    exit 1
}

# A failed start leaves DIR (and its full log) for inspection; `stop DIR` removes it.
die_start() {
    die "$* (the full log is in $dir/server.log; clean up with: $0 stop $dir)"
}

usage() {
    echo "usage: $0 start DIR | stop DIR" >&2
    exit 2
}

is_root() {
    [ "$(id -u)" -eq 0 ]
}

# Runs a command as the user that owns the cluster, with no stdin, from a directory it can
# enter (runuser keeps the caller's working directory).
as_owner() {
    if is_root; then
        (cd / && runuser -u postgres -- "$@" </dev/null)
    else
        (cd / && "$@" </dev/null)
    fi
}

free_port() {
    python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])' 2>/dev/null || echo $((20000 + $(od -An -N2 -tu2 /dev/urandom) % 40000))
}

log_tail() {
    if [ -f "$1" ]; then
        echo "pg-test-cluster: last lines of $1:" >&2
        tail -n 30 "$1" >&2
    fi
}

abs_path() {
    case $1 in
    /*) printf '%s\n' "$1" ;;
    *) printf '%s/%s\n' "$(pwd)" "$1" ;;
    esac
}

cmd_start() {
    dir=$(abs_path "$1")
    [ -x "$PGBIN/initdb" ] || die "no PostgreSQL 15 binaries in $PGBIN (apt-get install postgresql-15)"
    if [ -e "$dir" ] && [ -n "$(ls -A "$dir" 2>/dev/null)" ]; then
        die "$dir exists and is not empty (stop the old cluster with: $0 stop $dir)"
    fi
    mkdir -p "$dir"
    touch "$dir/$MARK"
    base=$dir
    user=$(id -un)
    if is_root; then
        user=postgres
        getent passwd postgres >/dev/null || die "running as root needs the postgres system user"
        chown postgres "$dir"
        if ! runuser -u postgres -- test -w "$dir" -a -x "$dir" </dev/null 2>/dev/null; then
            base=$(mktemp -d /tmp/jk-pg-test.XXXXXX)
            touch "$base/$MARK"
            chown postgres "$base"
            printf '%s\n' "$base" >"$dir/base"
            ln -s "$base/server.log" "$dir/server.log"
        fi
    fi
    data=$base/data
    log=$base/server.log
    : >"$log"
    is_root && chown postgres "$log"
    # --no-sync only skips initdb's final flush of the fresh cluster (a crash would just
    # mean a new cluster); the running server keeps fsync on.
    if ! as_owner "$PGBIN/initdb" -D "$data" -U "$user" -A trust -E UTF8 --locale=C \
        --no-sync >"$log" 2>&1; then
        log_tail "$log"
        die_start "initdb failed"
    fi
    cat >>"$data/postgresql.conf" <<EOF

# pg-test-cluster.sh
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
fsync = on
synchronous_commit = on
full_page_writes = on
max_connections = 200
log_min_messages = warning
EOF
    tries=0
    while :; do
        tries=$((tries + 1))
        port=$(free_port)
        printf 'port = %s\n' "$port" >>"$data/postgresql.conf"
        if as_owner "$PGBIN/pg_ctl" start -w -t 60 -D "$data" -l "$log" >/dev/null 2>&1; then
            break
        fi
        # Another process may have taken the port between the check and the start.
        if [ "$tries" -lt 5 ] && grep -q 'could not bind\|Address already in use' "$log"; then
            continue
        fi
        log_tail "$log"
        die_start "the server did not start"
    done
    if ! as_owner "$PGBIN/createdb" -h 127.0.0.1 -p "$port" -U "$user" "$DB" >>"$log" 2>&1; then
        log_tail "$log"
        as_owner "$PGBIN/pg_ctl" stop -m immediate -D "$data" >/dev/null 2>&1 || true
        die_start "createdb failed"
    fi
    printf '%s\n' "$port" >"$dir/port"
    printf 'postgresql://%s@127.0.0.1:%s/%s\n' "$user" "$port" "$DB"
}

cmd_stop() {
    dir=$(abs_path "$1")
    [ -d "$dir" ] || die "$dir does not exist"
    [ -f "$dir/$MARK" ] || die "$dir was not made by $0; not removing it"
    base=$dir
    [ -f "$dir/base" ] && base=$(cat "$dir/base")
    rc=0
    if [ -f "$base/data/postmaster.pid" ]; then
        if ! as_owner "$PGBIN/pg_ctl" stop -m fast -w -t 60 -D "$base/data" >/dev/null 2>&1; then
            log_tail "$base/server.log"
            echo "pg-test-cluster: pg_ctl stop failed" >&2
            rc=1
        fi
    fi
    if [ "$base" != "$dir" ] && [ -f "$base/$MARK" ]; then
        rm -rf "$base"
    fi
    rm -rf "$dir"
    return "$rc"
}

[ $# -eq 2 ] || usage
case $1 in
start) cmd_start "$2" ;;
stop) cmd_stop "$2" ;;
*) usage ;;
esac
