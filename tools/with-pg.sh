#!/bin/sh
# with-pg.sh - run a command with JK_TEST_PG_URL pointing at a throwaway PostgreSQL cluster.
set -eu
dir=$(mktemp -d /tmp/jk-pg.XXXXXX)
url=$(tools/pg-test-cluster.sh start "$dir")
trap 'tools/pg-test-cluster.sh stop "$dir" >/dev/null 2>&1 || true' EXIT INT TERM
JK_TEST_PG_URL=$url "$@"
