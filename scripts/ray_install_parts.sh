#!/usr/bin/env bash
# On the GPU machine: keep the parts of the Ray bundle (scripts/ray_parts.sh) as they arrive, one or more per
# call, in $RAYBUNDLE (default /root/raybundle, which lasts while the machine stays warm); once every part
# named in the MANIFEST is there, check the whole against its sha256, unpack it into $RAYSITE (default
# /tmp/site) and import ray and ray.serve from there. Then every later command starts with
#   export PYTHONPATH=/tmp/site:$PWD/src:$PWD
#
#   scripts/ray_install_parts.sh [.device/ray]     # exit 0: installed (or already); 3: parts still missing
set -euo pipefail

SRC=${1:-.device/ray}
DEST=${RAYBUNDLE:-/root/raybundle}
SITE=${RAYSITE:-/tmp/site}
PY=${PY:-python3}
IMPORTS=${IMPORTS:-ray ray.serve fastapi uvicorn starlette structlog pydantic pydantic_settings redis}
mkdir -p "$DEST"

check_import() {
    # shellcheck disable=SC2086
    PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" "$PY" - $IMPORTS <<'PYEOF'
import importlib, sys
for name in sys.argv[1:]:
    mod = importlib.import_module(name)
    print(f"import {name}: {getattr(mod, '__version__', '')} {getattr(mod, '__file__', '')}")
PYEOF
}

if [[ -f "$DEST/INSTALLED" ]]; then
    echo "already installed in $SITE" >&2
    check_import
    exit 0
fi
[[ -f "$SRC/MANIFEST" ]] && cp "$SRC/MANIFEST" "$DEST/MANIFEST"
for p in "$SRC"/part-*; do
    [[ -f "$p" ]] || continue
    cp "$p" "$DEST/" && echo "kept $(basename "$p") ($(du -h "$p" | cut -f1))" >&2
done
if [[ ! -f "$DEST/MANIFEST" ]]; then
    echo "no MANIFEST yet: carry .device/ray/MANIFEST with a part" >&2
    exit 3
fi
# shellcheck disable=SC1091
source <(grep -E '^(parts|sha256|ray)=' "$DEST/MANIFEST")
have=$(ls "$DEST"/part-* 2>/dev/null | wc -l)
if (( have < parts )); then
    missing=$(for i in $(seq 0 $((parts - 1))); do f=$(printf 'part-%02d' "$i"); [[ -f "$DEST/$f" ]] || echo -n "$f "; done)
    echo "have $have of $parts parts; missing: $missing" >&2
    exit 3
fi
got=$(cat "$DEST"/part-* | sha256sum | cut -d' ' -f1)
if [[ "$got" != "$sha256" ]]; then
    echo "bundle sha256 $got != MANIFEST $sha256: a part is damaged or from another build" >&2
    exit 4
fi
mkdir -p "$SITE"
cat "$DEST"/part-* | xz -d -T0 | tar -C "$SITE" -xf -
chmod +x "$SITE/ray/core/src/ray/raylet/raylet" "$SITE/ray/core/src/ray/gcs/gcs_server" 2>/dev/null || true
check_import
touch "$DEST/INSTALLED"
echo "installed Ray $ray in $SITE: export PYTHONPATH=$SITE:\$PWD/src:\$PWD" >&2
