#!/usr/bin/env bash
# A throwaway PostgreSQL server for the tests, on a free loopback port.
#   tests/postgres.sh start DIR   initialise DIR, start the server, print its URL
#   tests/postgres.sh stop DIR    stop it (DIR can then be deleted)
# PostgreSQL refuses to run as root, so as root the server runs as the unprivileged
# user $PG_USER (default: postgres), which is created if it does not exist.
set -euo pipefail
action=${1:?usage: postgres.sh start|stop DIR}
dir=${2:?usage: postgres.sh start|stop DIR}
user=${PG_USER:-postgres}

# Debian keeps the server binaries off PATH.
for bin in /usr/lib/postgresql/*/bin; do [ -d "$bin" ] && PATH="$PATH:$bin"; done
command -v initdb >/dev/null || { echo "postgres.sh: initdb not found (install postgresql)" >&2; exit 3; }

as_server() {
  if [ "$(id -u)" = 0 ]; then runuser -u "$user" -- "$@"; else "$@"; fi
}

case $action in
  start)
    mkdir -p "$dir"
    if [ "$(id -u)" = 0 ]; then
      id "$user" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$user"
      chown "$user" "$dir"
    fi
    as_server initdb -D "$dir/data" -U registry --auth=trust --encoding=UTF8 --locale=C.UTF-8 >"$dir/initdb.log"
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    # fsync off: a test server's data is disposable, and the suite runs much faster.
    as_server pg_ctl -D "$dir/data" -l "$dir/server.log" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c full_page_writes=off" start >/dev/null
    echo "postgresql://registry@127.0.0.1:$port/postgres"
    ;;
  stop)
    as_server pg_ctl -D "$dir/data" -m fast -w stop >/dev/null
    ;;
  *)
    echo "usage: postgres.sh start|stop DIR" >&2; exit 2
    ;;
esac
