#!/usr/bin/env bash
# PostgreSQL for Thinklio's tests and benchmarks: installs PostgreSQL 15 and
# pgvector when missing, and starts or stops a throw-away cluster.
#
#   scripts/postgres.sh install          PostgreSQL 15 + pgvector (needs root)
#   scripts/postgres.sh start [PORT DIR] a cluster on 127.0.0.1:PORT (default
#                                        54329) in DIR (default
#                                        /tmp/thinklio-postgres-PORT: the
#                                        server's user must reach it, which a
#                                        checkout under /root would not allow);
#                                        prints its URL
#                                        (with TLS on, from a throw-away CA)
#   scripts/postgres.sh ca    [PORT DIR] prints the path of that CA's certificate
#   scripts/postgres.sh stop  [PORT DIR] stops it
#   scripts/postgres.sh reset [PORT DIR] stops it and deletes its data
#
# PostgreSQL 15 is in this Debian release. pgvector is not packaged for it,
# so `install` takes Debian's pgvector source package from the next release
# (trixie) — fetched and verified by apt against the archive's signed
# indexes, through a private apt directory derived from this machine's own
# sources, so the system's apt configuration stays untouched — and builds it
# against PostgreSQL 15. Anything that fails stops the script with the reason.
set -euo pipefail
cd "$(dirname "$0")/.."

PG_VERSION=15
PG_BIN=/usr/lib/postgresql/$PG_VERSION/bin
PGVECTOR_VERSION=0.8.0

die() {
    echo "postgres.sh: $*" >&2
    exit 1
}

have_pgvector() {
    [ -f "/usr/share/postgresql/$PG_VERSION/extension/vector.control" ] &&
        grep -q "default_version = '$PGVECTOR_VERSION'" \
            "/usr/share/postgresql/$PG_VERSION/extension/vector.control"
}

install() {
    if [ ! -x "$PG_BIN/postgres" ] || [ ! -x "$PG_BIN/pg_config" ] ||
        [ ! -f "$("$PG_BIN/pg_config" --includedir-server 2>/dev/null)/postgres.h" ] ||
        ! command -v make >/dev/null || ! command -v gcc >/dev/null; then
        [ "$(id -u)" = 0 ] || die "PostgreSQL $PG_VERSION is missing and installing it needs root"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            "postgresql-$PG_VERSION" "postgresql-server-dev-$PG_VERSION" build-essential
    fi
    if have_pgvector; then
        return
    fi
    [ "$(id -u)" = 0 ] || die "pgvector is missing and installing it needs root"
    local sources=/etc/apt/sources.list.d/debian.sources
    [ -f "$sources" ] || die "no $sources to derive the source package's origin from"
    local uri key
    uri=$(awk '/^URIs:/ { print $2; exit }' "$sources")
    key=$(awk '/^Signed-By:/ { print $2; exit }' "$sources")
    [ -n "$uri" ] && [ -n "$key" ] || die "cannot read URIs and Signed-By from $sources"
    local apt_dir build
    apt_dir=$(pwd)/target/apt
    build=$(pwd)/target/pgvector-build
    rm -rf "$apt_dir" "$build"
    mkdir -p "$apt_dir/sources.list.d" "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$build"
    printf 'Types: deb-src\nURIs: %s\nSuites: trixie\nComponents: main\nSigned-By: %s\n' \
        "$uri" "$key" >"$apt_dir/sources.list.d/trixie-src.sources"
    local opts=(-o "APT::Sandbox::User=root" -o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$apt_dir/sources.list.d"
        -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache")
    apt-get "${opts[@]}" update -qq
    (cd "$build" && apt-get "${opts[@]}" source --download-only -qq "pgvector=$PGVECTOR_VERSION-1")
    tar -xzf "$build/pgvector_$PGVECTOR_VERSION.orig.tar.gz" -C "$build"
    make -s -C "$build/pgvector-$PGVECTOR_VERSION" PG_CONFIG="$PG_BIN/pg_config" OPTFLAGS="" >/dev/null
    make -s -C "$build/pgvector-$PGVECTOR_VERSION" PG_CONFIG="$PG_BIN/pg_config" install >/dev/null
    have_pgvector || die "pgvector $PGVECTOR_VERSION did not install"
}

start() {
    local port=${1:-54329}
    local dir=${2:-${TMPDIR:-/tmp}/thinklio-postgres-$port}
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    # PostgreSQL refuses to run as root: the cluster belongs to `postgres`
    # when this runs as root, to the caller otherwise.
    local as=()
    if [ "$(id -u)" = 0 ]; then
        id postgres >/dev/null 2>&1 || die "no user postgres to run the cluster as"
        chown postgres "$dir"
        as=(runuser -u postgres --)
    fi
    if [ ! -f "$dir/data/PG_VERSION" ]; then
        "${as[@]}" "$PG_BIN/initdb" -D "$dir/data" -U thinklio --auth=trust -E UTF8 --no-sync >/dev/null
    fi
    certificates "$dir"
    if ! "${as[@]}" "$PG_BIN/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
        # pg_stat_statements counts the benchmarks' statements. Every test's
        # schema makes its statements distinct entries; past the default of
        # 5,000 the least used are evicted and a count taken across them
        # goes down, so the cluster keeps up to 50,000.
        "${as[@]}" "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 60 start -o \
            "-h 127.0.0.1 -p $port -k $dir -c fsync=on -c max_connections=200 -c shared_buffers=256MB \
             -c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.max=50000 \
             -c ssl=on -c ssl_cert_file=$dir/tls/server.crt -c ssl_key_file=$dir/tls/server.key" \
            >/dev/null || die "the cluster did not start; see $dir/log"
    fi
    "$PG_BIN/psql" -h 127.0.0.1 -p "$port" -U thinklio -d postgres -qAt \
        -c "SELECT 1 FROM pg_database WHERE datname = 'thinklio'" | grep -q 1 ||
        "$PG_BIN/createdb" -h 127.0.0.1 -p "$port" -U thinklio thinklio
    # The benchmarks count the statements a store sends per interaction.
    "$PG_BIN/psql" -h 127.0.0.1 -p "$port" -U thinklio -d thinklio -qAt \
        -c "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" >/dev/null
    echo "postgres://thinklio@127.0.0.1:$port/thinklio"
}

# A throw-away certificate authority and a server certificate it signed, for
# localhost and 127.0.0.1, so tests connect with TLS as a deployment would
# (`sslmode=require`, or `verify-full` with `sslrootcert` = `ca`'s file).
certificates() {
    local dir=$1 tls=$1/tls
    [ -f "$tls/server.crt" ] && return 0
    if ! command -v openssl >/dev/null 2>&1; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl >/dev/null
    fi
    mkdir -p "$tls"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=Thinklio test CA" \
        -keyout "$tls/ca.key" -out "$tls/ca.crt" >/dev/null 2>&1 || die "cannot make the test CA"
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
        -keyout "$tls/server.key" -out "$tls/server.csr" >/dev/null 2>&1 || die "cannot make the server key"
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' > "$tls/san.ext"
    openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.crt" -CAkey "$tls/ca.key" -CAcreateserial \
        -days 3650 -extfile "$tls/san.ext" -out "$tls/server.crt" >/dev/null 2>&1 || die "cannot sign the server certificate"
    chmod 600 "$tls/server.key"
    [ "$(id -u)" = 0 ] && chown -R postgres "$tls"
    chmod 644 "$tls/ca.crt"
}

# The test CA's certificate, for `sslrootcert`.
ca() {
    local port=${1:-54329}
    local dir=${2:-${TMPDIR:-/tmp}/thinklio-postgres-$port}
    [ -f "$dir/tls/ca.crt" ] || die "no cluster with certificates in $dir: run scripts/postgres.sh start $port"
    echo "$dir/tls/ca.crt"
}

stop() {
    local port=${1:-54329}
    local dir=${2:-${TMPDIR:-/tmp}/thinklio-postgres-$port}
    [ -f "$dir/data/PG_VERSION" ] || return 0
    local as=()
    [ "$(id -u)" = 0 ] && as=(runuser -u postgres --)
    "${as[@]}" "$PG_BIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
}

reset() {
    local port=${1:-54329}
    local dir=${2:-${TMPDIR:-/tmp}/thinklio-postgres-$port}
    stop "$port" "$dir"
    rm -rf "$dir"
}

case "${1:-}" in
    install) install ;;
    start) shift; start "$@" ;;
    ca) shift; ca "$@" ;;
    stop) shift; stop "$@" ;;
    reset) shift; reset "$@" ;;
    bin) echo "$PG_BIN" ;;
    *) die "usage: scripts/postgres.sh install | start [PORT DIR] | ca [PORT DIR] | stop [PORT DIR] | reset [PORT DIR] | bin" ;;
esac
