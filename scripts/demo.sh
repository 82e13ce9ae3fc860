#!/usr/bin/env bash
# The embedded default, end to end on the CPU (a few minutes): set up, synthesise a small emotion dataset of
# real video files, check it, build a tiny offline Qwen2.5-Omni model, pseudo-label the explanation sentences
# with the offline NRC-lexicon teacher, distil the verifier (ERV), and run the SFT cold start.
# Everything lands in demo_data/ (inputs) and runs/ (TensorBoard logs, checkpoints, the exported verifier).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
ecr() { .venv/bin/ecr "$@"; }

step() { printf '\n=== %s\n' "$*"; }

step "1/6 synthesise the dataset (demo_data/synth)"
ecr data synth --out demo_data/synth --num-clips 64 --labels dfew --inconsistent-fraction 0.25 --seed 0

step "2/6 validate every clip"
ecr data check --config configs/demo/sft.yaml

step "3/6 build the tiny offline Qwen2.5-Omni thinker + processor (demo_data/tiny_omni)"
ecr model tiny --out demo_data/tiny_omni

step "4/6 pseudo-label explanation sentences with the lexicon teacher (demo_data/erv/sentences.jsonl)"
ecr label --input demo_data/synth/manifest.jsonl --output demo_data/erv/sentences.jsonl \
  --teacher lexicon --labels dfew --splits '[train, val]'

step "5/6 distil the verifier (ERV) -> runs/demo/erv/verifier"
ecr fit --config configs/demo/erv.yaml

step "6/6 SFT cold start of the tiny Omni model -> runs/demo_sft"
ecr fit --config configs/demo/sft.yaml

printf '\nDone. TensorBoard: .venv/bin/tensorboard --logdir runs\n'
