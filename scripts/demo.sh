#!/usr/bin/env bash
# The embedded default, end to end on the CPU: set up (system FFmpeg, the pinned .venv), then run the whole
# method as one chain of ordinary ecr commands (configs/demo/pipeline.yaml): synthesise a small emotion
# dataset of real video files, check it, build a tiny offline Qwen2.5-Omni model, SFT, let the SFT policy
# explain the training clips in its own words, pseudo-label those sentences with the offline NRC-lexicon
# teacher, distil the verifier (ERV), GRPO with the explanation reward, predict and score both policies, and
# write the HTML report. Stages whose outputs are up to date are skipped (and say so); extra arguments go to
# `ecr pipeline` (e.g. --force grpo, --dry_run true). Inputs land in demo_data/, runs and reports in runs/.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/ecr pipeline --file configs/demo/pipeline.yaml "$@"
