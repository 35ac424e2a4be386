#!/usr/bin/env bash
# Makes target/peers-venv, a Python virtual environment with the pinned peers
# of the benchmark suite (requirements.txt), once; again when the pins change.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=target/peers-venv
stamp="$venv/.requirements"
if [ -x "$venv/bin/python" ] && cmp -s benches/peers/requirements.txt "$stamp"; then
    exit 0
fi
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
fi
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check -r benches/peers/requirements.txt
cp benches/peers/requirements.txt "$stamp"
