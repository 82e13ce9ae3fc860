# ecr runtime image: system FFmpeg (torchcodec's decoder libraries) + ecr with every extra at the exact tested
# versions of requirements/lock.txt (docs/install.md).
# PyPI's torch wheels (the lock's 2.14.1) carry their own CUDA runtime, cuDNN and NCCL, so the image runs on NVIDIA GPUs
# with only the host driver (NVIDIA Container Toolkit: `docker run --gpus all`). Data, model folders, the HF
# cache and run outputs are mounted, never copied in; the container runs as the non-root user `ecr`.
#   docker build -t ecr .
#   docker run --gpus all --rm -v "$PWD/data:/workspace/data" -v "$PWD/models:/workspace/models:ro" \
#     -v "$PWD/runs:/workspace/runs" -v "$HOME/.cache/huggingface:/home/ecr/.cache/huggingface" \
#     ecr fit --config configs/sft.yaml
FROM python:3.11-slim-bookworm

# ffmpeg: torchcodec's libav* libraries; g++: DeepSpeed JIT-builds its CPU Adam for the offload configs.
# Debian's stable point releases move these versions, so they follow the base image rather than a pin.
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ffmpeg g++ \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/ecr
COPY pyproject.toml README.md ./
COPY requirements ./requirements
COPY src ./src
# Exactly the lock's versions (every package pinned there; tests/unit/core/test_dockerfile.py).
RUN pip install --no-cache-dir pip==26.3 \
    && pip install --no-cache-dir -c requirements/lock.txt "/opt/ecr[all]" \
    && pip check

RUN useradd --create-home --uid 1000 ecr
WORKDIR /workspace
COPY --chown=ecr:ecr configs ./configs
RUN mkdir -p data models runs && chown ecr:ecr data models runs
USER 1000:1000
# (TOKENIZERS_PARALLELISM holds no secret; hadolint flags the word TOKEN)
# hadolint ignore=DL3064
ENV HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
VOLUME ["/workspace/data", "/workspace/models", "/workspace/runs"]
ENTRYPOINT ["ecr"]
CMD ["--help"]
