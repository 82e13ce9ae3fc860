"""The policy backbone interface: what every model family (Qwen2.5-Omni, text LMs, later HumanOmni/R1-Omni or
Qwen3-Omni) provides to the training stages.

A stage never touches a family's internals; it asks the backbone to
- `load()` the weights (heavy: called from `configure_model`),
- `collator(mode)` to turn `ClipSample`s into model inputs ("train": prompt + target with assistant-only
  labels, right padding; "generate": prompt only, left padding),
- `loss(batch)` for supervised training,
- `encode_prompt(batch)` ONCE per prompt: media features merged into the prompt embeddings + positions, the
  cacheable `EncodedPrompt` that GRPO reuses for G rollouts and for policy and reference log-probs,
- `generate(encoded, group_size=G, …)` (one prefill per prompt for its G samples) and
  `token_logprobs(encoded, completion_ids, completion_mask)` on that encoding.
Adding a family = a new module implementing this Protocol + `register_backbone`, nothing else.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import torch

from ecr.models.config import PolicyConfig
from ecr.models.scoring import SamplingDistribution, SamplingFilters, TokenScores

CollateMode = Literal["train", "generate"]


@dataclass
class EncodedPrompt:
    """A left-padded prompt batch with media already encoded: reusable for rollouts and log-probs.

    `generate_kwargs` holds what `generate` needs besides the embeddings (e.g. Omni grid sizes for its
    3-D rotary positions) and `use_audio_in_video` the A/V layout the prompt was encoded with (Omni: audio
    interleaved in the video span); media tensors themselves are NOT kept, so the encoders never run again.
    """

    input_ids: torch.Tensor  # [B, P] prompt token ids (placeholders included)
    inputs_embeds: torch.Tensor  # [B, P, H] token embeddings with media features scattered in
    attention_mask: torch.Tensor  # [B, P] 1 = real token, 0 = left padding
    position_ids: torch.Tensor  # [D, B, P] rotary positions (D = 3 for Omni m-RoPE, 1 for plain LMs)
    next_position: torch.Tensor  # [B] position id of the first completion token
    generate_kwargs: dict[str, torch.Tensor] = field(default_factory=dict)  # per-sample tensors, batch dim 0
    use_audio_in_video: bool = False  # the batch's A/V layout (one flag per batch, as the collator sets it)

    @property
    def batch_size(self) -> int:
        return self.input_ids.shape[0]

    def map_rows(self, fn: Callable[[torch.Tensor, int], torch.Tensor]) -> EncodedPrompt:
        """The encoding with `fn(tensor, batch_dim)` applied to every per-sample tensor (rows are samples)."""
        return replace(
            self,
            input_ids=fn(self.input_ids, 0),
            inputs_embeds=fn(self.inputs_embeds, 0),
            attention_mask=fn(self.attention_mask, 0),
            position_ids=fn(self.position_ids, 1),
            next_position=fn(self.next_position, 0),
            generate_kwargs={k: fn(v, 0) for k, v in self.generate_kwargs.items()},
        )

    def repeat_interleave(self, repeats: int) -> EncodedPrompt:
        """Each prompt `repeats` times in a row (B → B·G), e.g. for G rollouts per prompt. No re-encoding."""
        return self.map_rows(lambda t, dim: t.repeat_interleave(repeats, dim=dim))

    def select(self, rows: torch.Tensor) -> EncodedPrompt:
        """The rows `rows` (long [B']) of the batch, e.g. the groups a filter keeps."""
        return self.map_rows(lambda t, dim: t.index_select(dim, rows.to(t.device)))

    def detach(self) -> EncodedPrompt:
        """The same encoding cut from the graph (frozen towers: nothing to back-propagate into)."""
        return replace(self, inputs_embeds=self.inputs_embeds.detach())

    @staticmethod
    def concat(parts: Sequence[EncodedPrompt]) -> EncodedPrompt:
        """The rows of several encodings as one batch (dynamic sampling joins the groups of several draws).

        Prompts are left-padded to the longest (ids 0, embeddings 0, attention 0, positions 1: padding is
        masked, its values never reach a real token); `generate_kwargs` tensors are joined on dim 0, their
        trailing dims right-padded with 0 (per-sample audio feature masks differ in length between batches).
        """
        if not parts:
            raise ValueError("EncodedPrompt.concat needs at least one encoding")
        first = parts[0]
        if len(parts) == 1:
            return first
        if any(p.use_audio_in_video != first.use_audio_in_video for p in parts):
            raise ValueError("cannot join prompts encoded with and without use_audio_in_video")
        if any(p.generate_kwargs.keys() != first.generate_kwargs.keys() for p in parts):
            raise ValueError("cannot join prompts whose generate_kwargs differ in keys")
        width = max(p.input_ids.shape[1] for p in parts)

        def left(t: torch.Tensor, value: float, dim: int) -> torch.Tensor:
            pad = width - t.shape[dim]
            if not pad:
                return t
            shape = list(t.shape)
            shape[dim] = pad
            return torch.cat([t.new_full(shape, value), t], dim=dim)

        return EncodedPrompt(
            input_ids=torch.cat([left(p.input_ids, 0, 1) for p in parts]),  # [ΣB, P]
            inputs_embeds=torch.cat([left(p.inputs_embeds, 0.0, 1) for p in parts]),  # [ΣB, P, H]
            attention_mask=torch.cat([left(p.attention_mask, 0, 1) for p in parts]),  # [ΣB, P]
            position_ids=torch.cat([left(p.position_ids, 1, 2) for p in parts], dim=1),  # [D, ΣB, P]
            next_position=torch.cat([p.next_position for p in parts]),  # [ΣB]
            generate_kwargs={k: _cat_rows([p.generate_kwargs[k] for p in parts]) for k in first.generate_kwargs},
            use_audio_in_video=first.use_audio_in_video,
        )


def _cat_rows(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Tensors [B_i, *T_i] → [ΣB_i, *max T]: joined on dim 0, each trailing dim right-padded with 0."""
    shape = [max(t.shape[d] for t in tensors) for d in range(1, tensors[0].dim())]
    padded = []
    for t in tensors:
        pads: list[int] = []
        for d in reversed(range(1, t.dim())):
            pads += [0, shape[d - 1] - t.shape[d]]
        padded.append(torch.nn.functional.pad(t, pads) if any(pads) else t)
    return torch.cat(padded)


@contextlib.contextmanager
def eval_mode(module: torch.nn.Module) -> Iterator[None]:
    """Temporarily `eval()` (sampling must never run in train mode: see `HFBackbone.generate`)."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


def completion_positions(next_position: torch.Tensor, length: int, dims: int) -> torch.Tensor:
    """Positions of appended text tokens: they continue after the prompt's largest position on every axis.

    next_position [B] → [dims, B, length]
    """
    steps = torch.arange(length, device=next_position.device)
    pos = next_position[:, None] + steps[None, :]  # [B, C]
    return pos[None].expand(dims, -1, -1)


@runtime_checkable
class PolicyBackbone(Protocol):
    """What a model family provides to the stages (see module docstring)."""

    name: str
    config: PolicyConfig  # what was asked for (weights, LoRA, quantisation, inputs)
    model: torch.nn.Module | None  # set by load(); a PeftModel when LoRA is on

    def load(self, device: torch.device | str | None = None) -> torch.nn.Module:
        """Load weights (+ quantisation, LoRA, freezing). Idempotent."""
        ...

    def collator(self, mode: CollateMode) -> Callable[[list[Any]], dict[str, Any]]:
        """A picklable collate function for DataLoader workers."""
        ...

    def loss(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, int]:
        """Mean token cross-entropy on the assistant tokens and the number of those tokens."""
        ...

    def encode_prompt(self, batch: Mapping[str, Any]) -> EncodedPrompt:
        """Run the media encoders once and merge them into the prompt embeddings."""
        ...

    def generate(
        self, prompt: EncodedPrompt, *, group_size: int = 1, share_prefix: bool = True, **generation_kwargs: Any
    ) -> torch.Tensor:
        """Completion token ids [B·G, C] (prompt stripped; padded with the pad id after EOS), sampled in eval mode;
        `group_size=G` samples G per prompt (a prompt's rows contiguous), with `share_prefix` from ONE prefill of
        each prompt, exactly what `generate(prompt.repeat_interleave(G))` samples."""
        ...

    def eos_token_ids(self) -> list[int]:
        """Every id that ends a completion (tokenizer and generation config)."""
        ...

    def eos_texts(self) -> tuple[str, ...]:
        """Those end-of-sequence tokens as text."""
        ...

    def completion_mask(self, completion_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mask [N, C], truncated [N]) of generated ids: up to and including the first EOS."""
        ...

    def token_logprobs(
        self, prompt: EncodedPrompt, completion_ids: torch.Tensor, completion_mask: torch.Tensor
    ) -> torch.Tensor:
        """Log-prob [B, C] of each completion token given the encoded prompt (grad flows to trainable params)."""
        ...

    def score_completions(
        self,
        prompt: EncodedPrompt,
        completion_ids: torch.Tensor,
        completion_mask: torch.Tensor,
        *,
        temperature: float = 1.0,
        chunk_tokens: int | None = None,
        group_size: int = 1,
        share_prefix: bool = True,
        filters: SamplingFilters = SamplingFilters(),
    ) -> TokenScores:
        """Log-probs and entropies [B·G, C] under `sampling_distribution(temperature)`, in one chunked pass (GRPO's
        policy/old/ref passes) of prompt [B] with G completions each; `share_prefix`: each prompt runs once for
        its G completions where `can_share_prefix()` allows it. With `filters` on, also the sampler's log-probs
        (`TokenScores.sampler_logprobs`) from the same logits."""
        ...

    def can_share_prefix(self) -> bool:
        """Whether a prompt's KV cache can serve its completions now (not while gradient checkpointing trains)."""
        ...

    def prompt_encoding_is_trainable(self) -> bool:
        """True when a trained part (a media tower, the token embeddings) changes `encode_prompt`'s output, so a
        cached encoding carries no gradient for it and update passes must encode again."""
        ...

    def media_token_ids(self) -> list[int]:
        """Placeholder token ids a completion must never contain (suppressed while sampling)."""
        ...

    def sampling_distribution(
        self, temperature: float = 1.0, filters: SamplingFilters = SamplingFilters()
    ) -> SamplingDistribution:
        """What `generate` samples from at `temperature` with `filters` (media ids suppressed); its policy π is the
        distribution `score_completions` takes its log-probs and entropies under."""
        ...

    def adapter_disabled(self) -> AbstractContextManager[None]:
        """Context in which the model runs without its LoRA adapter (reference log-probs, no second copy)."""
        ...

    def decode(self, token_ids: torch.Tensor) -> list[str]:
        """Completion texts (special tokens dropped, format tags kept)."""
        ...

    def trainable_parameter_names(self) -> list[str]:
        """Names of the parameters training changes (LoRA adapters, unfrozen modules): what checkpoints hold."""
        ...

    def save_pretrained(self, out_dir: str | Path, *, merged: bool = False) -> Path:
        """Adapters in PEFT format (or, merged=True, a full HF model folder + processor); returns the folder."""
        ...
