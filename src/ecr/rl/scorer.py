"""The one object that samples a GRPO step and takes its log-probs (docs/method.md §4).

`GroupScorer` is built once (`build_scorer`, from `GRPOModule.configure_model`) and owns what every pass must
agree on: the sampling settings (their temperature is the log-probs' too, so a fresh rollout's importance ratio
is exactly 1), the LM-head chunk size, prefix sharing (each prompt runs once for its G completions, in sampling
and in every log-prob pass, where the backbone allows it: `PolicyBackbone.can_share_prefix`) and the reference
policy:
- "adapter": the policy itself with its LoRA adapter switched off (no second copy). The policy's prompt encoding
  is reused: LoRA sits in the language model only, so with frozen towers and embeddings the reference would
  encode the prompt identically;
- "copy": a frozen copy loaded once (full fine-tune), which encodes the prompt with its own weights, because
  the policy's trained token embeddings no longer match the reference's;
- "none": β = 0, no reference pass at all.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Literal

import torch

from ecr.errors import ConfigError
from ecr.models import EncodedPrompt, PolicyBackbone, build_backbone
from ecr.models.scoring import SamplingFilters, TokenScores

ReferenceMode = Literal["auto", "adapter", "copy"]


@dataclass(frozen=True)
class SamplingSettings:
    """How rollouts are sampled (HF generation arguments)."""

    max_new_tokens: int = 512
    """Longest completion; a completion that reaches it without EOS counts as truncated."""
    temperature: float = 1.0
    """Sampling temperature (also the temperature of the GRPO log-probs)."""
    top_p: float = 1.0
    """Nucleus sampling mass (1 = off). On, GRPO scores the filtered sampler too and corrects the loss for it by
    importance sampling (grpo.off_policy_correction)."""
    top_k: int = 0
    """Top-k sampling (0 = off; HF's own default of 50 is overridden); corrected as top_p is."""
    min_p: float | None = None
    """Min-p sampling (None = off); corrected as top_p is."""
    repetition_penalty: float = 1.0
    """HF repetition penalty (1 = off). Not part of the scored distribution: on, GRPO's log-probs are not the
    sampler's."""
    min_new_tokens: int = 0
    """Shortest completion (benchmarks force fixed lengths with it). Not part of the scored distribution either."""

    def unscored(self) -> list[str]:
        """The settings on that reshape what `generate` samples but that no log-prob pass (and no correction)
        accounts for: GRPO's log-probs are then not the sampler's."""
        return [name for name, on in (("repetition_penalty", self.repetition_penalty != 1.0),
                                      ("min_new_tokens", self.min_new_tokens > 0)) if on]  # fmt: skip

    def filters(self) -> SamplingFilters:
        """The top-k/top-p/min-p truncation `generate` applies (the sampler's q differs from π when it is on)."""
        return SamplingFilters(top_k=self.top_k, top_p=self.top_p, min_p=self.min_p)

    def generate_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {
            "do_sample": True,
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "repetition_penalty": self.repetition_penalty,
        }
        if self.min_p is not None:
            kw["min_p"] = self.min_p
        if self.min_new_tokens:
            kw["min_new_tokens"] = self.min_new_tokens
        return kw


@dataclass
class GroupScorer:
    """Sampling and policy / old / reference log-probs of G completions per prompt (see module docstring)."""

    policy: PolicyBackbone
    group_size: int
    sampling: SamplingSettings = SamplingSettings()
    chunk_tokens: int | None = None  # LM-head tokens per chunk (None = a 128 MiB logit budget)
    share_prefix: bool = True
    reference: Literal["none", "adapter", "copy"] = "none"
    reference_copy: PolicyBackbone | None = None  # the frozen copy of reference "copy"

    def generate(self, prompt: EncodedPrompt) -> torch.Tensor:
        """Completion ids [B·G, C] for prompt [B] (eval mode, no grad; a prompt's G rows contiguous)."""
        with torch.no_grad():
            return self.policy.generate(
                prompt, group_size=self.group_size, share_prefix=self.share_prefix, **self.sampling.generate_kwargs()
            )

    def scores(
        self,
        prompt: EncodedPrompt,
        ids: torch.Tensor,
        mask: torch.Tensor,
        backbone: PolicyBackbone | None = None,
        filters: SamplingFilters = SamplingFilters(),
    ) -> TokenScores:
        """Log-probs and entropies [B·G, C] of ids [B·G, C] after prompt [B] under `backbone` (the policy), with
        gradients when they are on (the update pass); with `filters` on, also the sampler's log-probs."""
        return (backbone or self.policy).score_completions(
            prompt,
            ids,
            mask,
            temperature=self.sampling.temperature,
            chunk_tokens=self.chunk_tokens,
            group_size=self.group_size,
            share_prefix=self.share_prefix,
            filters=filters,
        )

    @property
    def filtered(self) -> bool:
        """Whether the sampler truncates π (top-k/top-p/min-p): its samples then need the off-policy correction."""
        return self.sampling.filters().active

    def old_scores(self, prompt: EncodedPrompt, ids: torch.Tensor, mask: torch.Tensor) -> TokenScores:
        """The policy's scores at sampling time (no grad): the old log-probs of μ > 1 updates, and, from the same
        logits when a filter is on, the sampler's own log-probs q (`TokenScores.sampler_logprobs`)."""
        with torch.no_grad():
            return self.scores(prompt, ids, mask, filters=self.sampling.filters())

    def reference_logprobs(
        self, prompt: EncodedPrompt, ids: torch.Tensor, mask: torch.Tensor, own_prompt: EncodedPrompt | None = None
    ) -> torch.Tensor | None:
        """Reference log-probs [B·G, C] (None without a reference); `own_prompt` [B] is the same prompts encoded
        by a copy reference with its own weights (required for "copy")."""
        if self.reference == "none":
            return None
        with torch.no_grad():
            if self.reference == "adapter":
                with self.policy.adapter_disabled():
                    return self.scores(prompt, ids, mask).logprobs
            if self.reference_copy is None or own_prompt is None:
                raise ValueError("a copy reference needs its own encoding of the prompts (own_prompt)")
            return self.scores(own_prompt, ids, mask, backbone=self.reference_copy).logprobs

    def sync_reference(self) -> None:
        """Copy the policy's weights into a copy reference (`ref_model_sync_steps`); no-op otherwise."""
        if self.reference_copy is None:
            return
        assert self.reference_copy.model is not None and self.policy.model is not None
        self.reference_copy.model.load_state_dict(self.policy.model.state_dict())


def build_scorer(
    policy: PolicyBackbone,
    *,
    group_size: int,
    sampling: SamplingSettings,
    chunk_tokens: int | None,
    share_prefix: bool,
    beta: float,
    reference: ReferenceMode,
    reference_device: torch.device | str | None,
) -> GroupScorer:
    """The scorer of a loaded policy: reference "auto" = the adapter when LoRA is on, else a copy (β = 0: none).
    A copy is loaded here, once, on `reference_device`, frozen and in eval mode."""
    if unscored := sampling.unscored():
        warnings.warn(
            f"sampling.{' and '.join(unscored)} reshape what GRPO samples but are not part of its log-probs and no "
            "off-policy correction covers them: the importance ratios and the KL are not the sampler's",
            UserWarning,
            stacklevel=2,
        )
    scorer = GroupScorer(policy, group_size, sampling, chunk_tokens=chunk_tokens, share_prefix=share_prefix)
    if beta == 0:
        return scorer
    if reference == "adapter" or (reference == "auto" and hasattr(policy.model, "disable_adapter")):
        if policy.config.adapter is not None:
            raise ConfigError(
                "GRPO: with policy.adapter the adapter-disabled reference would be the base model, not the policy "
                "you start from. Export the SFT model merged (`ecr export --merge true`) and set policy.model to "
                "its merged/ folder (a fresh LoRA is added), or set reference: copy"
            )
        scorer.reference = "adapter"
        return scorer
    copy = build_backbone(policy.config)
    model = copy.load(reference_device)
    if reference_device is not None and policy.config.quantization == "none":
        model.to(reference_device)  # not a submodule of the LightningModule: the Trainer does not move it
    model.requires_grad_(False).eval()
    scorer.reference, scorer.reference_copy = "copy", copy
    return scorer
