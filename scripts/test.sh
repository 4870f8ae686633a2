#!/usr/bin/env bash
# The whole test flow, as `make test` and CI (.ci/run) run it:
#   1. the Debian packages the tests use (SIP peers, browsers, servers), if missing
#   2. Redis and PostgreSQL running on loopback, if not already
#   3. the virtual environment with the package and its test extras
#   4. ruff, mypy, pytest; exits non-zero if any of them fails
# Safe to run again: every step checks before it acts.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
export VENV

# sip-tester = sipp; baresip(-ffmpeg) = SIP video peer; chromium = WebRTC browser peer;
# redis-tools/postgresql-client give redis-cli and pg_isready for the checks below.
APT_PACKAGES=(
    sip-tester baresip baresip-ffmpeg openssl redis-server redis-tools postgresql
    postgresql-client chromium python3-venv
)

log() { printf '==> %s\n' "$*"; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        echo "need root for: $*" >&2; return 1
    fi
}

install_packages() {
    local missing=() pkg
    for pkg in "${APT_PACKAGES[@]}"; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
            missing+=("$pkg")
        fi
    done
    if [ ${#missing[@]} -eq 0 ]; then
        log "Debian packages present"
        return
    fi
    if ! command -v apt-get >/dev/null; then
        echo "missing packages (${missing[*]}) and no apt-get to install them" >&2
        exit 1
    fi
    log "installing ${missing[*]}"
    as_root apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        -o DPkg::Lock::Timeout=300 "${missing[@]}" </dev/null
}

wait_until() {  # wait_until SECONDS DESCRIPTION COMMAND...
    local seconds=$1 what=$2
    shift 2
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        if [ $SECONDS -ge $deadline ]; then
            echo "$what did not come up within ${seconds}s" >&2
            exit 1
        fi
        sleep 0.5
    done
}

redis_up() { [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = PONG ]; }
postgres_up() { pg_isready -q -h 127.0.0.1 -p 5432; }

start_services() {
    if redis_up; then
        log "Redis is running"
    else
        log "starting Redis on 127.0.0.1:6379"
        as_root mkdir -p /var/lib/redis /var/log/redis
        as_root redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
            --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
        wait_until 30 "Redis" redis_up
    fi
    if postgres_up; then
        log "PostgreSQL is running"
    else
        local version
        version=$(find /etc/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' 2>/dev/null | sort -V | tail -n 1)
        if [ -z "$version" ]; then
            echo "no PostgreSQL cluster in /etc/postgresql" >&2
            exit 1
        fi
        log "starting PostgreSQL $version"
        as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start
        wait_until 60 "PostgreSQL" postgres_up
    fi
}

install_packages
start_services
bash scripts/venv.sh test

failed=()
lint_paths=()
for dir in gateway tests bench; do
    [ -e "$dir" ] && lint_paths+=("$dir")
done
log "ruff check ${lint_paths[*]}"
"$VENV/bin/python" -m ruff check "${lint_paths[@]}" || failed+=(ruff)
log "mypy"
"$VENV/bin/python" -m mypy || failed+=(mypy)
log "pytest -q"
"$VENV/bin/python" -m pytest -q || failed+=(pytest)

if [ ${#failed[@]} -gt 0 ]; then
    echo "FAILED: ${failed[*]}" >&2
    exit 1
fi
