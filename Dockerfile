# ecr runtime image: system FFmpeg (for torchcodec) + the pinned Python stack (CUDA build of torch 2.14.1).
# Build: docker build -t ecr .   Run: docker run --gpus all -v $PWD/runs:/app/runs ecr fit --config configs/sft.yaml
FROM python:3.11-slim-bookworm
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ffmpeg git \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir --upgrade pip && pip install --no-cache-dir -e .
COPY configs ./configs
COPY scripts ./scripts
ENV HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
ENTRYPOINT ["ecr"]
