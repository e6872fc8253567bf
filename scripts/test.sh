#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite, the MPI tests included.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
bash scripts/setup.sh
source scripts/env.sh
exec "$MFC_PYTHON" -m pytest -q -ra "$@" tests
