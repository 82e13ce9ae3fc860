"""Exactness on CUDA, fp32 and bf16 (docs/method.md §4): what GRPO's fast paths compute equals the plain paths.

- encode once: log-probs from the cached prompt encoding (towers run once) = an ordinary forward that re-encodes
  the media, and G rows of one encoding = the encoding's row repeated;
- shared prefill: `generate(prompt, group_size=G)` (one prefill per prompt) samples what G repeated prompts sample;
- shared prefix: `score_completions(..., group_size=G)` (one prompt pass per group) = the per-row pass;
- scorer = sampler: the log-prob the scorer gives each sampled token = the log-softmax, at the sampling
  temperature, of the logits the sampler drew it from (KV-cached incremental decode vs one full pass).

Tolerances on per-token log-probs (max |difference|): fp32 1e-4, bf16 5e-2. CUDA kernels differ with the batch
and sequence shapes (attention over P vs P + C positions, one prefill vs G), so the paths agree to rounding, not
bit for bit; bf16 keeps 8 mantissa bits. Greedy ids must be identical in fp32; in bf16 the first step's scores
(from the same prefill) are compared. `ECR_GPU_TESTS_ON_CPU=1` runs these on the CPU (conftest.py).
"""

from __future__ import annotations

import pytest
import torch
from support.tiny import decoded_clips
from transformers import LogitsProcessor, LogitsProcessorList

from ecr.models import load_policy
from ecr.models.hf import model_inputs

pytestmark = pytest.mark.gpu
TOL = {"float32": 1e-4, "bfloat16": 5e-2}
G = 3
DTYPES = pytest.mark.parametrize("dtype", sorted(TOL))


class Recorder(LogitsProcessor):
    """Keeps the scores the sampler draws from at every step (custom processors run before the temperature)."""

    def __init__(self) -> None:
        self.scores: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self.scores.append(scores.float().clone())
        return scores


def _policy(policy, device: str, dtype: str):
    """The tiny Omni with non-zero LoRA adapters (they take part in every path), in eval mode, on `device`."""
    torch.manual_seed(0)
    bb = load_policy(policy(dtype=dtype), device)
    bb.model.to(device)
    for n, p in bb.model.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.05)
    bb.model.eval()
    return bb


def _batch(bb, samples, device: str) -> dict:
    """Three clips of 2 s, 2 s and 3 s: the generation batch is left-padded to different prompt lengths."""
    clips = [*samples[:2], *decoded_clips(1, seed=5, duration=3.0)]
    batch = bb.collator("generate")(clips)
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max())


@DTYPES
def test_encode_once_equals_the_plain_forward(policy, samples, device, dtype):
    bb = _policy(policy, device, dtype)
    batch = _batch(bb, samples, device)
    with torch.no_grad():
        prompt = bb.encode_prompt(batch)
        ids = bb.generate(prompt, max_new_tokens=6, min_new_tokens=6, do_sample=False)
        mask = torch.ones_like(ids)
        cached = bb.token_logprobs(prompt, ids, mask)
        inputs = model_inputs(batch)  # the plain path: media re-encoded inside one ordinary forward
        inputs["input_ids"] = torch.cat([batch["input_ids"], ids], 1)
        inputs["attention_mask"] = torch.cat([batch["attention_mask"], mask], 1)
        logits = bb.model(**inputs).logits[:, batch["input_ids"].shape[1] - 1 : -1]
        # the distribution the scorer normalises over: the media placeholder ids are never sampled (suppressed)
        plain = bb.sampling_distribution().policy_log_probs(logits).gather(-1, ids[..., None])[..., 0]
        repeated = bb.token_logprobs(
            prompt.repeat_interleave(G), ids.repeat_interleave(G, 0), mask.repeat_interleave(G, 0)
        )
    assert _max_diff(cached, plain) <= TOL[dtype], _max_diff(cached, plain)
    assert _max_diff(repeated, cached.repeat_interleave(G, 0)) <= TOL[dtype]


def _sample(bb, prompt, shared: bool, seed: int, **kw) -> tuple[torch.Tensor, list[torch.Tensor]]:
    recorder = Recorder()
    torch.manual_seed(seed)
    with torch.no_grad():
        source = prompt if shared else prompt.repeat_interleave(G)
        ids = bb.generate(source, group_size=G if shared else 1, logits_processor=LogitsProcessorList([recorder]), **kw)
    return ids, recorder.scores


@DTYPES
def test_shared_prefill_samples_what_repeated_prompts_sample(policy, samples, device, dtype):
    bb = _policy(policy, device, dtype)
    with torch.no_grad():
        prompt = bb.encode_prompt(_batch(bb, samples, device))
    plain_ids, plain_scores = _sample(bb, prompt, False, seed=7, max_new_tokens=8, do_sample=False)
    ids, scores = _sample(bb, prompt, True, seed=7, max_new_tokens=8, do_sample=False)
    assert ids.shape == plain_ids.shape == (3 * G, 8)
    finite = torch.isfinite(plain_scores[0])
    assert torch.equal(finite, torch.isfinite(scores[0]))  # the same tokens suppressed
    assert _max_diff(scores[0][finite], plain_scores[0][finite]) <= TOL[dtype]
    if dtype == "float32":
        assert torch.equal(ids, plain_ids)
        for a, b in zip(scores, plain_scores, strict=True):
            assert _max_diff(a[torch.isfinite(b)], b[torch.isfinite(b)]) <= TOL[dtype]
    sampled, _ = _sample(bb, prompt, True, seed=3, max_new_tokens=8, do_sample=True, top_k=0)
    assert not torch.isin(sampled, torch.tensor(bb.media_token_ids(), device=sampled.device)).any()


@DTYPES
def test_shared_prefix_scores_equal_the_per_row_pass(policy, samples, device, dtype):
    bb = _policy(policy, device, dtype)
    with torch.no_grad():
        prompt = bb.encode_prompt(_batch(bb, samples, device))
        allowed = torch.tensor([i for i in range(100) if i not in bb.media_token_ids()], device=device)
        ids = allowed[torch.randint(0, len(allowed), (3 * G, 5), device=device)]  # no suppressed media id
        mask = torch.ones_like(ids)
        mask[1, 3:] = 0  # an early EOS
        plain = bb.score_completions(prompt, ids, mask, group_size=G, share_prefix=False)
        shared = bb.score_completions(prompt, ids, mask, group_size=G)
    assert _max_diff(shared.logprobs, plain.logprobs) <= TOL[dtype]
    assert _max_diff(shared.entropy, plain.entropy) <= 10 * TOL[dtype]


@DTYPES
def test_the_scorer_gives_the_sampler_log_probs(policy, samples, device, dtype):
    """Sampled at T = 0.7 without top-k/top-p, so the sampler's distribution is softmax(logits / T) over the
    vocabulary (media placeholders are not suppressed here: the scorer normalises over every token too)."""
    bb = _policy(policy, device, dtype)
    bb.media_token_ids = lambda: []  # type: ignore[method-assign]  # this instance only
    temperature = 0.7
    with torch.no_grad():
        prompt = bb.encode_prompt(_batch(bb, samples, device))
        ids, scores = _sample(bb, prompt, True, seed=11, max_new_tokens=8, do_sample=True, top_k=0,
                              temperature=temperature)  # fmt: skip
        eos = ids == bb.tokenizer.eos_token_id
        mask = (torch.cumsum(eos.int(), 1) - eos.int() == 0).long()  # up to and including the first EOS
        scored = bb.score_completions(prompt, ids, mask, group_size=G, temperature=temperature).logprobs
    drawn = torch.stack([torch.log_softmax(s / temperature, -1) for s in scores], 1)  # [B·G, C, V]
    sampler = drawn.gather(-1, ids[..., None])[..., 0]
    assert mask.sum() > 0
    assert _max_diff(scored[mask.bool()], sampler[mask.bool()]) <= TOL[dtype]
