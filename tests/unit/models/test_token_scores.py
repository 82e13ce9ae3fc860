"""Chunked completion scoring (GRPO's policy/old/reference passes) and placeholder suppression while sampling."""

from __future__ import annotations

import pytest
import torch

from ecr.models import PolicyConfig, load_policy
from ecr.models.scoring import SamplingDistribution, chunked_token_scores, gather_logprobs


def _reference(hidden, head, ids, temperature, suppressed=()):
    """Log-probs and entropies [B, C] of the renormalised distribution without the `suppressed` ids."""
    logits = head(hidden).float() / temperature  # [B, C, V]
    keep = torch.ones(logits.shape[-1], dtype=torch.bool)
    keep[list(suppressed)] = False
    logp = torch.log_softmax(logits[..., keep], -1)  # [B, C, V - S]
    index = torch.cumsum(keep.long(), 0) - 1  # vocabulary id → column of the kept logits
    return logp.gather(-1, index[ids][..., None])[..., 0], -(logp.exp() * logp).sum(-1)


@pytest.mark.parametrize("chunk_tokens", [1, 3, 7, 1000])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("suppressed", [(), (0, 17, 49)])
def test_chunks_give_the_unchunked_values_and_gradients(chunk_tokens, temperature, suppressed) -> None:
    """Values and gradients of the chunked pass are those of the whole [B, C, V] distribution, with suppressed
    ids removed from its support (renormalised over the rest; entropy finite)."""
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 50)
    hidden = torch.randn(3, 5, 8, requires_grad=True)
    ids = torch.randint(1, 17, (3, 5))
    want_lp, want_ent = _reference(hidden, head, ids, temperature, suppressed)
    (want_grad,) = torch.autograd.grad(want_lp.sum(), hidden, retain_graph=True)
    dist = SamplingDistribution(temperature=temperature, suppressed=suppressed)
    got = chunked_token_scores(hidden, head, ids, distribution=dist, chunk_tokens=chunk_tokens)
    assert torch.allclose(got.logprobs, want_lp, atol=1e-6) and torch.allclose(got.entropy, want_ent, atol=1e-5)
    (grad,) = torch.autograd.grad(got.logprobs.sum(), hidden, retain_graph=True)  # recomputed per chunk
    assert torch.allclose(grad, want_grad, atol=1e-6)
    (want_ent_grad,) = torch.autograd.grad(want_ent.sum(), hidden)  # the entropy bonus's gradient, chunked too
    (ent_grad,) = torch.autograd.grad(got.entropy.sum(), hidden)
    assert torch.allclose(ent_grad, want_ent_grad, atol=1e-5)
    if temperature == 1.0 and not suppressed:
        assert torch.allclose(got.logprobs, gather_logprobs(head(hidden), ids), atol=1e-6)


def test_chunk_size_follows_the_logit_budget_and_bad_temperature_fails(monkeypatch) -> None:
    import ecr.models.scoring as scoring

    calls = []
    head = torch.nn.Linear(4, 10)
    monkeypatch.setattr(scoring, "LOGIT_BUDGET", 20)  # 2 tokens of a 10-class vocabulary per chunk

    def counting_head(x):
        calls.append(x.shape[0])
        return head(x)

    with torch.no_grad():
        chunked_token_scores(torch.randn(1, 5, 4), counting_head, torch.zeros(1, 5, dtype=torch.long))
    assert calls == [1, 2, 2, 1]  # one probe for the vocabulary size, then chunks of 2
    with pytest.raises(ValueError, match="temperature"):
        SamplingDistribution(temperature=0.0)


def test_backbone_scores_match_token_logprobs_and_mask(tiny_omni, clip_samples, small_inputs) -> None:
    bb = load_policy(PolicyConfig(model=str(tiny_omni), inputs=small_inputs, lora={"r": 4, "dropout": 0.0}))
    bb.model.eval()
    with torch.no_grad():
        prompt = bb.encode_prompt(bb.collator("generate")(clip_samples[:2]))
        ids = torch.randint(11, 100, (2, 6))
        mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
        scores = bb.score_completions(prompt, ids, mask, chunk_tokens=4)
        assert torch.allclose(scores.logprobs, bb.token_logprobs(prompt, ids, mask), atol=1e-6)
        assert scores.entropy[0, 4:].abs().sum() == 0 and bool((scores.entropy[:, :4] > 0).all())
        hot = bb.score_completions(prompt, ids, mask, temperature=2.0)
        assert not torch.allclose(hot.logprobs, scores.logprobs)
        media = bb.media_token_ids()
        assert bb.sampling_distribution(2.0) == SamplingDistribution(2.0, tuple(media)) and media
        after_eos = ids.masked_fill(~mask.bool(), media[0])  # a suppressed id where the mask is 0 scores 0
        assert torch.equal(bb.score_completions(prompt, after_eos, mask, chunk_tokens=4).logprobs, scores.logprobs)
        with pytest.raises(ValueError, match="suppressed media ids"):  # never sampled: its log-prob is -inf
            bb.score_completions(prompt, ids.masked_fill(mask.bool() & (ids == ids[0, 0]), media[0]), mask)


def test_sampling_never_emits_media_placeholders(tiny_omni, clip_samples, small_inputs) -> None:
    bb = load_policy(PolicyConfig(model=str(tiny_omni), inputs=small_inputs, lora={"enabled": False}))
    media = bb.media_token_ids()
    cfg = bb.base_model.config
    assert {cfg.video_token_id, cfg.audio_token_id, cfg.image_token_id} <= set(media)
    with torch.no_grad():  # make the placeholders by far the likeliest tokens
        bb.base_model.get_output_embeddings().bias = torch.nn.Parameter(torch.zeros(cfg.text_config.vocab_size))
        bb.base_model.get_output_embeddings().bias[media] = 50.0
        prompt = bb.encode_prompt(bb.collator("generate")(clip_samples[:2]))
        out = bb.generate(prompt, max_new_tokens=6, do_sample=True, top_k=0, min_new_tokens=6)
    assert not torch.isin(out, torch.tensor(media)).any()


@pytest.mark.parametrize("family", ["omni", "causal_lm"])
def test_a_shared_prefix_gives_the_plain_values_and_gradients(family, tiny_omni, tiny_lm, clip_samples, text_samples,
                                                              small_inputs) -> None:  # fmt: skip
    """G completions per prompt scored with ONE prompt pass per group equal the plain per-row path."""
    torch.manual_seed(0)
    if family == "omni":
        config = PolicyConfig(model=str(tiny_omni), inputs=small_inputs, lora={"r": 4, "dropout": 0.0})
        samples = clip_samples[:2]
    else:
        config = PolicyConfig(backbone="causal_lm", model=str(tiny_lm), lora={"r": 4, "dropout": 0.0})
        samples = text_samples
    bb = load_policy(config)
    for n, p in bb.model.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.05)  # adapters take part in both paths
    with torch.no_grad():
        prompt = bb.encode_prompt(bb.collator("generate")(samples)).detach()  # B = 2 prompts, G = 3 each
    ids = torch.randint(11, 100, (6, 5))
    mask = torch.ones_like(ids)
    mask[1, 3:] = 0  # an early EOS
    lora = [p for n, p in bb.model.named_parameters() if p.requires_grad]
    plain = bb.score_completions(prompt, ids, mask, group_size=3, share_prefix=False)
    plain_grads = torch.autograd.grad((plain.logprobs * torch.arange(1.0, 6.0)).sum(), lora)
    shared = bb.score_completions(prompt, ids, mask, group_size=3)
    shared_grads = torch.autograd.grad((shared.logprobs * torch.arange(1.0, 6.0)).sum(), lora)
    assert torch.allclose(shared.logprobs, plain.logprobs, atol=1e-5)
    assert torch.allclose(shared.entropy, plain.entropy, atol=1e-4)
    for a, b in zip(shared_grads, plain_grads, strict=True):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-4)
    with pytest.raises(ValueError, match="not groups of 4"):
        bb.score_completions(prompt, ids, mask, group_size=4)
