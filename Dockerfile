# resnet-search worker and tools (status, export-best, optuna-dashboard).
# CUDA comes inside PyTorch's wheels, so the host needs only the NVIDIA driver and the
# NVIDIA container toolkit. The default index serves CUDA 12.6 builds, which run on any
# driver from the 525 series on (CUDA minor-version compatibility); PyPI's default torch
# wheel targets a newer CUDA that older stock drivers cannot load.
FROM python:3.12-slim

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1

# Heavy, rarely changing layer first: rebuilding after a code change skips it.
# An empty TORCH_INDEX_URL takes pip's default index.
RUN if [ -n "${TORCH_INDEX_URL}" ]; then pip install --index-url "${TORCH_INDEX_URL}" torch torchvision; \
    else pip install torch torchvision; fi

WORKDIR /opt/resnet-search
COPY pyproject.toml README.md ./
COPY objectives ./objectives
COPY core ./core
COPY search ./search
COPY storage ./storage
RUN pip install . && rm -rf /root/.cache

# Non-root; data and checkpoints live on volumes. A new named volume takes the ownership
# of the directory it is mounted over, so workers can write to it.
RUN useradd --create-home --uid 1000 search \
 && mkdir -p /data /artifacts \
 && chown search:search /data /artifacts
USER search
WORKDIR /home/search
ENV SEARCH_DATA_DIR=/data SEARCH_ARTIFACTS=/artifacts

CMD ["search", "--help"]
