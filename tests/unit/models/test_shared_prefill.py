"""Generation with a shared prefill (`generate(prompt, group_size=G)`): each prompt is prefilled once and its KV
cache serves its G samples. It must sample exactly what G repeated prompts sample (docs/method.md §4). And GRPO's
scorer must score exactly the distribution `generate` samples from (same suppressed ids, same temperature)."""

from __future__ import annotations

import contextlib

import pytest
import torch
from transformers import LogitsProcessor, LogitsProcessorList

from ecr.models import PolicyConfig, load_policy
from ecr.models.scoring import SamplingFilters

G = 3


class Recorder(LogitsProcessor):
    """Keeps the scores HF samples from at every step. Custom processors run after the configured logits
    processors (`suppress_tokens` included: those ids hold -inf) and BEFORE the warpers (temperature, top-k/p),
    so with top_k=0 and top_p=1 the sampling distribution is softmax(recorded / T)."""

    def __init__(self) -> None:
        self.scores: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self.scores.append(scores.clone())
        return scores


def _backbone(family, tiny_omni, tiny_lm, small_inputs, **kw):
    """A LoRA policy with non-zero adapters (they take part in both paths), in eval mode as rollouts sample."""
    torch.manual_seed(0)
    if family == "causal_lm":
        config = PolicyConfig(backbone="causal_lm", model=str(tiny_lm), lora={"r": 4, "dropout": 0.0}, **kw)
    else:
        inputs = {**small_inputs, "audio_in_video": family == "omni-interleaved"}
        config = PolicyConfig(model=str(tiny_omni), inputs=inputs, lora={"r": 4, "dropout": 0.0}, **kw)
    bb = load_policy(config)
    for n, p in bb.model.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.05)
    bb.model.eval()
    return bb


def _prompt(bb, family, clip_samples, long_clip_samples, text_samples):
    """A left-padded batch whose prompts differ in length (2 s, 5 s and 3 s clips; two texts)."""
    if family == "causal_lm":
        samples = [*text_samples, dict(text_samples[0], id="t2", text="Wow.")]
    else:
        samples = [clip_samples[0], long_clip_samples[0], long_clip_samples[2]]
    batch = bb.collator("generate")(samples)
    lengths = batch["attention_mask"].sum(-1)
    assert len(set(lengths.tolist())) == len(samples), lengths  # really left-padded to different lengths
    with torch.no_grad():
        return bb.encode_prompt(batch)


def _sample(bb, prompt, shared: bool, seed: int, **kw):
    """(completion ids [B·G, C], processed scores per step, RNG state after) of one generate call."""
    recorder = Recorder()
    torch.manual_seed(seed)
    with torch.no_grad():
        if shared:
            ids = bb.generate(prompt, group_size=G, logits_processor=LogitsProcessorList([recorder]), **kw)
        else:
            ids = bb.generate(prompt.repeat_interleave(G), logits_processor=LogitsProcessorList([recorder]), **kw)
    return ids, recorder.scores, torch.get_rng_state()


SETTINGS = {
    "greedy": {"do_sample": False},
    "sample": {"do_sample": True, "top_k": 0, "temperature": 1.0},
    "filtered": {"do_sample": True, "top_k": 40, "top_p": 0.9, "temperature": 0.7, "repetition_penalty": 1.3,
                 "min_new_tokens": 4},
}  # fmt: skip


@pytest.mark.parametrize("family", ["omni-interleaved", "omni-sequential", "causal_lm"])
def test_shared_prefill_samples_what_repeated_prompts_sample(
    family, tiny_omni, tiny_lm, clip_samples, long_clip_samples, text_samples, small_inputs
) -> None:
    """Same seed → the same ids; the scores sampled from are equal at every step and the RNG ends in the same
    state (the same draws were made), for greedy, plain and filtered sampling."""
    bb = _backbone(family, tiny_omni, tiny_lm, small_inputs)
    prompt = _prompt(bb, family, clip_samples, long_clip_samples, text_samples)
    for name, kw in SETTINGS.items():
        plain_ids, plain_scores, plain_rng = _sample(bb, prompt, False, seed=7, max_new_tokens=8, **kw)
        ids, scores, rng = _sample(bb, prompt, True, seed=7, max_new_tokens=8, **kw)
        assert ids.shape == (3 * G, 8), name
        assert torch.equal(ids, plain_ids), name
        assert torch.equal(rng, plain_rng), name
        assert len(scores) == len(plain_scores) == 8, name
        for step, (a, b) in enumerate(zip(scores, plain_scores, strict=True)):
            assert torch.equal(torch.isinf(a), torch.isinf(b)), (name, step)  # the same tokens filtered out
            finite = torch.isfinite(b)
            assert torch.allclose(a[finite], b[finite], atol=1e-5), (name, step, (a[finite] - b[finite]).abs().max())
    if family != "causal_lm":  # the suppression of media placeholders holds on the shared path too
        sampled = bb.generate(prompt, group_size=G, max_new_tokens=8, min_new_tokens=8, do_sample=True, top_k=0)
        assert not torch.isin(sampled, torch.tensor(bb.media_token_ids())).any()


def test_the_prompt_is_prefilled_once_per_prompt(tiny_omni, tiny_lm, clip_samples, long_clip_samples, text_samples,
                                                 small_inputs) -> None:  # fmt: skip
    """The language model sees the prompt with B rows (not B·G); only single decode positions run on B·G."""
    bb = _backbone("omni-interleaved", tiny_omni, tiny_lm, small_inputs)
    prompt = _prompt(bb, "omni-interleaved", clip_samples, long_clip_samples, text_samples)
    shapes: list[tuple[int, int]] = []
    layer = bb.base_model.model.language_model.layers[0]
    handle = layer.register_forward_pre_hook(lambda _m, args, kwargs: shapes.append(tuple(args[0].shape[:2])),
                                             with_kwargs=True)  # fmt: skip
    try:
        with torch.no_grad():
            bb.generate(prompt, group_size=G, max_new_tokens=4, do_sample=False)
        repeated = list(shapes)
        shapes.clear()
        with torch.no_grad():
            bb.generate(prompt.repeat_interleave(G), max_new_tokens=4, do_sample=False)
    finally:
        handle.remove()
    p = prompt.input_ids.shape[1]
    assert repeated == [(3, p - 1)] + [(3 * G, 1)] * 4  # prefill on B rows, then the last prompt position + 3 steps
    assert shapes == [(3 * G, p)] + [(3 * G, 1)] * 3


def test_group_size_arguments_are_checked(tiny_omni, tiny_lm, clip_samples, long_clip_samples, text_samples,
                                          small_inputs) -> None:  # fmt: skip
    bb = _backbone("causal_lm", tiny_omni, tiny_lm, small_inputs)
    prompt = _prompt(bb, "causal_lm", clip_samples, long_clip_samples, text_samples)
    with torch.no_grad():
        assert torch.equal(bb.generate(prompt, group_size=1, max_new_tokens=3, do_sample=False),
                           bb.generate(prompt, max_new_tokens=3, do_sample=False))  # fmt: skip
        with pytest.raises(ValueError, match="group_size must be >= 1"):
            bb.generate(prompt, group_size=0, max_new_tokens=3)
        with pytest.raises(ValueError, match="not both"):
            bb.generate(prompt, group_size=2, num_return_sequences=2, max_new_tokens=3)


def test_generate_samples_in_eval_mode_under_gradient_checkpointing(tiny_omni, tiny_lm, clip_samples,
                                                                     long_clip_samples, text_samples,
                                                                     small_inputs) -> None:  # fmt: skip
    """Gradient checkpointing in train mode turns the KV cache off, which would decode from nothing: `generate`
    itself samples in eval mode (and gives train mode back), so a training policy samples what it does in eval."""
    bb = _backbone("causal_lm", tiny_omni, tiny_lm, small_inputs, gradient_checkpointing=True)
    prompt = _prompt(bb, "causal_lm", clip_samples, long_clip_samples, text_samples)
    samples = []
    for training in (False, True):
        bb.model.train(training)
        with torch.no_grad():
            samples.append(bb.generate(prompt, group_size=2, max_new_tokens=3, do_sample=False))
        assert bb.model.training == training
    assert torch.equal(samples[0], samples[1])


def test_shared_prefill_on_an_8bit_policy(tiny_omni, tiny_lm, clip_samples, long_clip_samples, text_samples,
                                          small_inputs) -> None:  # fmt: skip
    """The one-GPU GRPO setting (LoRA on 8-bit weights): the same samples from one prefill per prompt."""
    bb = _backbone("omni-interleaved", tiny_omni, tiny_lm, small_inputs, quantization="8bit")
    prompt = _prompt(bb, "omni-interleaved", clip_samples, long_clip_samples, text_samples)
    for name in ("greedy", "sample"):
        plain_ids, _, plain_rng = _sample(bb, prompt, False, seed=3, max_new_tokens=6, **SETTINGS[name])
        ids, _, rng = _sample(bb, prompt, True, seed=3, max_new_tokens=6, **SETTINGS[name])
        assert torch.equal(ids, plain_ids) and torch.equal(rng, plain_rng), name


def _assert_on_sampler(got, want, mask, quantized: bool, case) -> None:
    """Per-token log-probs [N, C] equal to 1e-5. 8-bit: bitsandbytes rounds activations to int8 row by row, so
    a last-bit difference between the cached decode and the full pass can flip one rounding and move that token
    by up to ~1e-3; all other tokens must still agree to 1e-5 (without the suppression none does: ~7e-3)."""
    diff = (got - want).abs()[mask]  # [active tokens]
    exact = float((diff <= 1e-5).float().mean())
    print("scorer vs sampler", case, f"max |diff| {float(diff.max()):.2e}, share within 1e-5 {exact:.3f}")
    if quantized:
        assert exact >= 0.9 and float(diff.max()) < 1e-3, (case, exact, float(diff.max()))
    else:
        assert float(diff.max()) < 1e-5, (case, float(diff.max()))


@pytest.mark.parametrize(
    ("family", "quantization"),
    [("omni-interleaved", "none"), ("omni-sequential", "none"), ("omni-interleaved", "8bit")],
)
def test_the_scorer_scores_the_distribution_generate_samples_from(
    family, quantization, tiny_omni, tiny_lm, clip_samples, long_clip_samples, text_samples, small_inputs
) -> None:
    """GRPO's log-prob passes (old and policy with the adapter on, reference with it off; shared prefix or one
    prompt per row; no-grad, or with grad in train mode as the update pass runs) give each sampled token the
    log-prob, and each position the entropy, of the distribution HF sampled from: log_softmax(recorded logits
    / T), the media ids at -inf. (8-bit on CPU: bitsandbytes switches train mode to dequantised fp32 matmuls,
    another function than the int8 one generate runs in eval mode, so its train-mode pass is not compared.)"""
    temperature = 1.3
    quantized = quantization != "none"
    bb = _backbone(family, tiny_omni, tiny_lm, small_inputs, quantization=quantization)
    prompt = _prompt(bb, family, clip_samples, long_clip_samples, text_samples)
    passes = [(True, False), (False, False)] + ([] if quantized else [(True, True)])  # (share_prefix, train with grad)
    for reference in (False, True):
        recorder = Recorder()
        torch.manual_seed(5)
        with torch.no_grad(), bb.adapter_disabled() if reference else contextlib.nullcontext():
            ids = bb.generate(prompt, group_size=G, do_sample=True, top_k=0, temperature=temperature,
                              max_new_tokens=8, logits_processor=LogitsProcessorList([recorder]))  # fmt: skip
        assert len(recorder.scores) == ids.shape[1] == 8
        sampler = torch.log_softmax(torch.stack(recorder.scores, 1).float() / temperature, -1)  # [N, C, V]
        mask = bb.completion_mask(ids)[0]  # [N, C]
        want = torch.where(mask, sampler.gather(-1, ids[..., None])[..., 0], 0.0)  # [N, C]
        want_entropy = torch.where(mask, -(sampler.exp() * sampler.clamp(min=-1e30)).sum(-1), 0.0)  # [N, C]
        for shared, grad in passes:
            bb.model.train(grad)  # the update pass trains (dropout 0); old/reference passes run without grad
            with torch.set_grad_enabled(grad), bb.adapter_disabled() if reference else contextlib.nullcontext():
                got = bb.score_completions(prompt, ids, mask, temperature=temperature, chunk_tokens=7,
                                           group_size=G, share_prefix=shared)  # fmt: skip
            case = (family, quantization, "reference" if reference else "policy", shared, grad)
            _assert_on_sampler(got.logprobs.detach(), want, mask, quantized, case)
            assert torch.allclose(got.entropy, want_entropy, atol=1e-3 if quantized else 1e-5), case
        bb.model.eval()


FILTERS = [
    SamplingFilters(top_k=20),
    SamplingFilters(top_p=0.8),
    SamplingFilters(min_p=0.5),
    SamplingFilters(top_k=40, top_p=0.9, min_p=0.02),
]


@pytest.mark.parametrize("filters", FILTERS, ids=["top_k", "top_p", "min_p", "all"])
def test_the_sampler_logprobs_are_what_generate_sampled_from(
    filters, monkeypatch, tiny_omni, tiny_lm, clip_samples, long_clip_samples, text_samples, small_inputs
) -> None:
    """With top-k/top-p/min-p on, the probabilities HF hands `torch.multinomial` at every step are the sampler
    distribution q of `sampling_distribution(T, filters)` (the same ids at 0, the same values elsewhere), and the
    old-log-prob pass's `sampler_logprobs` are q's log-probs of the sampled tokens (shared prefix or not), from
    the same logits as π's `logprobs`, which stay log_softmax(recorded / T)."""
    temperature = 1.3
    bb = _backbone("omni-interleaved", tiny_omni, tiny_lm, small_inputs)
    prompt = _prompt(bb, "omni-interleaved", clip_samples, long_clip_samples, text_samples)
    drawn: list[torch.Tensor] = []
    multinomial = torch.multinomial
    monkeypatch.setattr(
        torch, "multinomial", lambda probs, *a, **kw: drawn.append(probs.clone()) or multinomial(probs, *a, **kw)
    )
    recorder = Recorder()
    torch.manual_seed(5)
    with torch.no_grad():
        ids = bb.generate(prompt, group_size=G, do_sample=True, temperature=temperature, max_new_tokens=8,
                          top_k=filters.top_k, top_p=filters.top_p, min_p=filters.min_p,
                          logits_processor=LogitsProcessorList([recorder]))  # fmt: skip
    assert len(drawn) == len(recorder.scores) == ids.shape[1] == 8
    sampled_from = torch.stack(drawn, 1).log()  # [N, C, V]: log q as HF computed it
    q = bb.sampling_distribution(temperature, filters).log_probs(torch.stack(recorder.scores, 1))  # [N, C, V]
    assert torch.equal(torch.isinf(q), torch.isinf(sampled_from))  # the same ids filtered out (and suppressed)
    assert bool(torch.isinf(q).sum(-1).gt(len(bb.media_token_ids())).any())  # the filter did filter
    finite = torch.isfinite(q)
    assert torch.allclose(q[finite], sampled_from[finite], atol=1e-4)
    mask = bb.completion_mask(ids)[0]  # [N, C]
    want_q = torch.where(mask, sampled_from.gather(-1, ids[..., None])[..., 0], 0.0)  # [N, C]
    want_pi = torch.where(mask, torch.log_softmax(torch.stack(recorder.scores, 1) / temperature, -1)
                          .gather(-1, ids[..., None])[..., 0], 0.0)  # fmt: skip
    for shared in (True, False):
        with torch.no_grad():
            got = bb.score_completions(prompt, ids, mask, temperature=temperature, chunk_tokens=7, group_size=G,
                                       share_prefix=shared, filters=filters)  # fmt: skip
        assert got.sampler_logprobs is not None
        _assert_on_sampler(got.sampler_logprobs, want_q, mask, False, (filters, shared, "q"))
        _assert_on_sampler(got.logprobs, want_pi, mask, False, (filters, shared, "pi"))
