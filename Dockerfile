# resnet-search worker and tools (status, export-best, optuna-dashboard).
# CUDA comes inside PyTorch's wheels, so the host needs only the NVIDIA driver and the
# NVIDIA container toolkit. The default index serves CUDA 12.6 builds, which run on any
# driver from the 525 series on (CUDA minor-version compatibility); PyPI's default torch
# wheel targets a newer CUDA that older stock drivers cannot load.
#
# Build arguments (README, "Docker Compose"):
#   BASE_IMAGE       any image with python3 (>= 3.11) and its venv module: python:3.12-slim,
#                    or a plain Debian bookworm with python3-venv for a cluster without registry
#   TORCH_INDEX_URL  where torch comes from; empty: pip's default index
# Air-gapped builds: wheels in ./wheelhouse (see wheelhouse/README.md) are installed with
# --no-index, so the build reaches no network at all. A folder in the build context rather
# than a named build context or an argument: Debian's docker.io (20.10) builds with a
# BuildKit that has neither named contexts nor arguments in RUN --mount.
ARG BASE_IMAGE=python:3.12-slim
FROM ${BASE_IMAGE}

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1

# A virtual environment: Debian's own python3 refuses pip installs outside one (PEP 668,
# "externally managed"); on python:3.12-slim it costs nothing.
RUN python3 -m venv /opt/venv
ENV VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH

# Heavy, rarely changing layer first: rebuilding after a code change skips it. Its cache key
# is the wheelhouse folder's content, not the code. An empty TORCH_INDEX_URL takes pip's
# default index.
RUN --mount=type=bind,source=wheelhouse,target=/wheelhouse \
    if ls /wheelhouse/*.whl >/dev/null 2>&1; then pip install --no-index --find-links /wheelhouse torch torchvision; \
    elif [ -n "${TORCH_INDEX_URL}" ]; then pip install --index-url "${TORCH_INDEX_URL}" torch torchvision; \
    else pip install torch torchvision; fi

WORKDIR /opt/resnet-search
# The dependencies next, with the packages as empty stubs: a code change reinstalls only the
# project (seconds), not its dependencies.
COPY pyproject.toml README.md ./
RUN --mount=type=bind,source=wheelhouse,target=/wheelhouse \
    if ls /wheelhouse/*.whl >/dev/null 2>&1; then set -- --no-index --find-links /wheelhouse; fi \
 && mkdir core objectives search storage && pip install "$@" . && pip uninstall -y resnet-search \
 && rm -rf core objectives search storage build *.egg-info
COPY objectives ./objectives
COPY core ./core
COPY search ./search
COPY storage ./storage
RUN --mount=type=bind,source=wheelhouse,target=/wheelhouse \
    if ls /wheelhouse/*.whl >/dev/null 2>&1; then set -- --no-index --find-links /wheelhouse; fi \
 && pip install --no-deps "$@" . && rm -rf build *.egg-info

# Non-root; data and checkpoints live on volumes. A new named volume takes the ownership
# of the directory it is mounted over, so workers can write to it.
RUN useradd --create-home --uid 1000 search \
 && mkdir -p /data /artifacts \
 && chown search:search /data /artifacts
USER search
WORKDIR /home/search
ENV SEARCH_DATA_DIR=/data SEARCH_ARTIFACTS=/artifacts

CMD ["search", "--help"]
