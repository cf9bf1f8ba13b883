#!/usr/bin/env bash
# Create (or update) bench/.venv: hpo-service with its server extra, plus bench/requirements.txt.
# Usage, from anywhere:  bench/setup_env.sh        (PYTHON=python3.12 bench/setup_env.sh for another Python)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/bench/.venv"
python="${PYTHON:-python3}"
"$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is needed")'
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet -e "$root[server]" -r "$root/bench/requirements.txt"
data="${LCBENCH_DATA_DIR:-$root/../shared/benchdata/yahpo/lcbench}"
if [ ! -f "$data/model.onnx" ]; then
    echo "warning: no LCBench surrogate at $data (set LCBENCH_DATA_DIR)" >&2
fi
echo "bench/.venv is ready: bench/.venv/bin/python bench/sample_efficiency.py --help"
