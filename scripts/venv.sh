#!/usr/bin/env bash
# Create the project's virtual environment if missing and install the package into it.
#
# Usage: scripts/venv.sh [EXTRAS]      e.g. scripts/venv.sh test  ->  pip install -e '.[test]'
#
# The editable install uses setuptools' "compat" mode (a .pth file naming the
# repository) because twistd only finds plugins in twisted/plugins/ directories
# that are on sys.path; the default editable mode hides the repository behind an
# import hook and `twistd --help` would not list `gateway`.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
EXTRAS=${1:-}

log() { printf '==> %s\n' "$*"; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        echo "need root for: $*" >&2; return 1
    fi
}

# A venv is tied to the path it was made at (its scripts' #! lines): one that was
# moved or copied with the repository is rebuilt rather than half-working.
if [ -x "$VENV/bin/python" ] && [ -f "$VENV/bin/pip" ]; then
    case "$(head -n 1 "$VENV/bin/pip")" in
        "#!$(cd "$VENV" && pwd)/bin/python"*) ;;
        *)
            log "$VENV was created elsewhere (moved or copied); recreating it"
            rm -rf "$VENV"
            ;;
    esac
fi

if [ ! -x "$VENV/bin/python" ]; then
    if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        echo "Python 3.11 or newer is needed as '$PYTHON' (set PYTHON=...)." >&2
        exit 1
    fi
    if ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null && command -v apt-get >/dev/null; then
        log "installing python3-venv"
        as_root apt-get update -q
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv
    fi
    log "creating $VENV with $("$PYTHON" --version)"
    "$PYTHON" -m venv "$VENV"
fi

target="."
[ -n "$EXTRAS" ] && target=".[$EXTRAS]"
log "pip install -e '$target'"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check \
    -e "$target" --config-settings editable_mode=compat
