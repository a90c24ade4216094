#!/usr/bin/env bash
# Sourced by scripts/dev, scripts/test, scripts/bench and .ci/run: finds or makes a PostgreSQL server
# and installs missing Debian packages, so every entry point works on a fresh machine.
#
#   ensure_postgres         exports GATEHOUSE_PG_SERVER (postgres://postgres@127.0.0.1:PORT, no database)
#   ensure_packages [--no-start] PKG...
#                           apt-get installs the packages that are not installed yet; --no-start keeps
#                           the services they bring from starting (Debian's nginx would take port 80)
#
# Knobs: GATEHOUSE_PG_PRIVATE=1 skips the shared server and uses the private cluster;
#        GATEHOUSE_PGDATA (default $repo/.pgdata) and GATEHOUSE_PG_PORT (default 54329) place it.
set -euo pipefail

GATEHOUSE_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

_pg_say() { echo "pg: $*" >&2; }
_pg_die() {
    echo "pg: error: $*" >&2
    exit 1
}

# Installs what is missing. `apt-get update` runs at most once, also across the scripts one run
# starts (.ci/run → scripts/test), hence the exported flag.
ensure_packages() {
    local pkg missing=() sudo=() no_start=0 status=0 policy=/usr/sbin/policy-rc.d saved_traps
    if [[ ${1:-} == --no-start ]]; then
        no_start=1
        shift
    fi
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
    done
    ((${#missing[@]})) || return 0
    command -v apt-get >/dev/null || _pg_die "missing ${missing[*]}, and this is not a Debian-like system: install them by hand"
    if ((EUID != 0)); then
        command -v sudo >/dev/null || _pg_die "missing ${missing[*]}: run as root or install them"
        sudo=(sudo)
    fi
    _pg_say "installing ${missing[*]}"
    if [[ ${GATEHOUSE_APT_UPDATED:-0} != 1 ]]; then
        "${sudo[@]}" apt-get update -qq
        export GATEHOUSE_APT_UPDATED=1
    fi
    if ((no_start)) && [[ ! -e $policy ]]; then
        # Maintainer scripts start services through invoke-rc.d / deb-systemd-invoke, which ask this
        # file first; 101 means "not now". It exists only while apt-get runs (also if interrupted).
        # One that is already there is the machine's own policy (Docker images ship a deny-all one):
        # it stays as it is.
        printf '#!/bin/sh\n# placed by gatehouse scripts/lib/pg.sh while it installs packages\nexit 101\n' |
            "${sudo[@]}" tee "$policy" >/dev/null
        "${sudo[@]}" chmod 755 "$policy"
        saved_traps=$(trap -p INT TERM)
        trap '"${sudo[@]}" rm -f "$policy"' INT TERM
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 ||
            status=$?
        trap - INT TERM
        eval "$saved_traps"
        "${sudo[@]}" rm -f "$policy"
    else
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 ||
            status=$?
    fi
    ((status == 0)) || _pg_die "apt-get install ${missing[*]} failed (exit $status)"
}

# True when a server on 127.0.0.1:$1 lets user postgres in without a password (-w: never prompt).
_pg_answers() {
    command -v psql >/dev/null || return 1
    PGCONNECT_TIMEOUT=3 psql -w -X -At -d "postgres://postgres@127.0.0.1:$1/postgres" -c 'select 1' >/dev/null 2>&1
}

_pg_use() {
    export GATEHOUSE_PG_SERVER="postgres://postgres@127.0.0.1:$1"
    _pg_say "using $GATEHOUSE_PG_SERVER${2:+ ($2)}"
}

# The directory with initdb/pg_ctl: the version that made an existing cluster, else pg_config's,
# else the newest under /usr/lib/postgresql (Debian keeps them off PATH).
_pg_bindir() {
    local want=${1:-} dir
    if [[ -n $want && -x /usr/lib/postgresql/$want/bin/initdb ]]; then
        echo "/usr/lib/postgresql/$want/bin"
        return
    fi
    dir=$(pg_config --bindir 2>/dev/null || true)
    if [[ -n $dir && -x $dir/initdb && -x $dir/pg_ctl ]]; then
        echo "$dir"
        return
    fi
    for dir in $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -t/ -k5 -rn); do
        if [[ -x $dir/initdb && -x $dir/pg_ctl ]]; then
            echo "$dir"
            return
        fi
    done
    return 1
}

# (c) Debian clusters that exist but are down: start them (no systemd in containers).
_pg_start_debian_clusters() {
    command -v pg_lsclusters >/dev/null || return 1
    local ver name _port status started=1
    while read -r ver name _port status _; do
        [[ $name == main && $status == down* ]] || continue
        _pg_say "starting the Debian cluster $ver/$name"
        if pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" start >&2; then started=0; fi
    done < <(pg_lsclusters -h 2>/dev/null)
    return $started
}

# (d) A private, disposable cluster owned by this checkout: trust auth, its own port and socket.
_pg_private_cluster() {
    local dir=${GATEHOUSE_PGDATA:-$GATEHOUSE_ROOT/.pgdata} port=${GATEHOUSE_PG_PORT:-54329}
    local run=() bindir version=""
    if _pg_answers "$port"; then
        _pg_use "$port" "private cluster, already running"
        return
    fi
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    if ((EUID == 0)); then
        # PostgreSQL refuses to run as root: the files go to the postgres user.
        id -u postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
        chown -R postgres: "$dir"
        run=(runuser -u postgres --)
        if ! "${run[@]}" test -w "$dir"; then
            # e.g. a checkout under /root: postgres cannot reach it, so keep the cluster in /var/tmp.
            _pg_say "user postgres cannot reach $dir; the private cluster goes to /var/tmp instead"
            dir=/var/tmp/gatehouse-pgdata-$(echo "$GATEHOUSE_ROOT" | cksum | cut -d' ' -f1)
            mkdir -p "$dir"
            chown -R postgres: "$dir"
        fi
    fi
    [[ -s $dir/data/PG_VERSION ]] && version=$(<"$dir/data/PG_VERSION")
    bindir=$(_pg_bindir "$version") || _pg_die "no initdb/pg_ctl found (pg_config --bindir, /usr/lib/postgresql/*/bin)"
    if [[ -z $version ]]; then
        _pg_say "creating a private cluster in $dir/data"
        "${run[@]}" "$bindir/initdb" -D "$dir/data" -A trust -U postgres -E UTF8 --no-locale >"$dir/initdb.log" 2>&1 ||
            { cat "$dir/initdb.log" >&2; _pg_die "initdb failed"; }
        # Loopback only; the socket stays inside the directory (short path, no /var/run needed).
        # Durability is traded for speed: this cluster holds throwaway dev and test databases.
        cat >>"$dir/data/postgresql.conf" <<EOF

# --- gatehouse private cluster (scripts/lib/pg.sh) ---
listen_addresses = '127.0.0.1'
unix_socket_directories = '${dir//\'/\'\'}'
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
    fi
    _pg_say "starting the private cluster on 127.0.0.1:$port (log: $dir/log)"
    "${run[@]}" "$bindir/pg_ctl" -D "$dir/data" -l "$dir/log" -o "-p $port" -w -t 60 start >/dev/null ||
        { tail -n 20 "$dir/log" >&2; _pg_die "the private cluster did not start (port $port taken? set GATEHOUSE_PG_PORT)"; }
    _pg_answers "$port" || _pg_die "the private cluster started but does not answer on 127.0.0.1:$port"
    _pg_use "$port" "private cluster in $dir"
}

ensure_postgres() {
    local private=${GATEHOUSE_PG_PRIVATE:-0}
    # (a) A server on the standard port that lets postgres in.
    if [[ $private != 1 ]] && _pg_answers 5432; then
        _pg_use 5432
        return
    fi
    # (b) Not installed at all: Debian's package (it creates, and may start, cluster "main").
    if ! _pg_bindir >/dev/null || ! command -v psql >/dev/null; then
        ensure_packages postgresql
        if [[ $private != 1 ]] && _pg_answers 5432; then
            _pg_use 5432
            return
        fi
    fi
    # (c) A Debian cluster that is down: start it and ask again.
    if [[ $private != 1 ]] && _pg_start_debian_clusters; then
        local _
        for _ in 1 2 3 4 5; do
            if _pg_answers 5432; then
                _pg_use 5432
                return
            fi
            sleep 1
        done
    fi
    # (d) Nothing usable on 5432 (absent, or it wants a password): our own cluster.
    _pg_private_cluster
}
