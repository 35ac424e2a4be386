#!/usr/bin/env bash
# Makes target/embed-venv, the Python environment of the embedding
# benchmark's reference (requirements-embed.txt), once; again when the pins
# change. Prints the interpreter's path.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=target/embed-venv
stamp="$venv/.requirements"
if ! { [ -x "$venv/bin/python" ] && cmp -s benches/peers/requirements-embed.txt "$stamp"; }; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check -r benches/peers/requirements-embed.txt
    cp benches/peers/requirements-embed.txt "$stamp"
fi
echo "$PWD/$venv/bin/python"
