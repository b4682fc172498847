# Sourced by scripts/serve and scripts/test: a virtual environment in ./.venv, because Debian
# and Ubuntu refuse `pip install` into the system Python (PEP 668). Installs python3-venv
# (and python3) with apt-get where the system lacks them.
apt_install() {
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

ensure_venv() {
    if [ -x .venv/bin/python ] && .venv/bin/python -c 'import sys' 2>/dev/null; then
        return
    fi
    if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import ensurepip, venv' 2>/dev/null
    then
        command -v apt-get >/dev/null 2>&1 || { echo "need python3 with venv" >&2; exit 1; }
        apt_install python3 python3-venv
    fi
    rm -rf .venv
    python3 -m venv .venv
    .venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
}
