#!/usr/bin/env bash
# A GPU session in one command, at most 8 minutes on an H100 with the build:
#   bash benchmarks/gpu_session.sh            (results in benchmarks/results/<card>-bf16-<date>/)
#   bash benchmarks/gpu_session.sh --dry-run  (the same steps CPU-sized, into a temporary folder; CI runs it)
# The steps, their timeouts and outputs are in benchmarks/gpu_session.py. PY picks the Python.
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PY:-python3}" benchmarks/gpu_session.py "$@"
