"""Encode-once decoding shared by the Hugging Face backbones: log-probs of completions after a cached prompt
encoding (`score_completions`, with one prompt pass per group of G completions), sampling from it (`generate`,
one prefill per prompt for its G samples, always in eval mode) and what ends a completion (EOS ids and texts,
`completion_mask`). `HFBackbone` (loading, LoRA, saving) mixes it in; a family provides `encode_prompt`, its
decoder body and its position layout.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import torch

from ecr.models.backbone import EncodedPrompt, completion_positions, eval_mode
from ecr.models.completions import completion_mask
from ecr.models.scoring import SamplingDistribution, SamplingFilters, TokenScores, chunked_token_scores


def activation_checkpointing(model: object) -> bool:
    """Whether a transformers model checkpoints activations (transformers 5 renamed the flag; the old name
    warns, older versions only have it)."""
    flag = getattr(model, "is_activation_checkpointing", None)
    if flag is None:
        flag = getattr(model, "is_gradient_checkpointing", False)
    return bool(flag)


@runtime_checkable
class Generates(Protocol):
    """A model with HF's `generate` (transformers types it against its own protocol, not `nn.Module`)."""

    def generate(self, *args: Any, **kwargs: Any) -> torch.Tensor: ...


class HFDecoding:
    """Scoring and sampling on an `EncodedPrompt` (the decoding half of `ecr.models.hf.HFBackbone`)."""

    model: torch.nn.Module | None
    chat_turn_ends: tuple[str, ...] = ("<|im_end|>", "<|endoftext|>")  # ChatML (Qwen) turn and text ends

    # provided by HFBackbone
    base_model: Any
    tokenizer: Any

    def _require_model(self) -> torch.nn.Module:
        raise NotImplementedError

    def encode_prompt(self, batch: Mapping[str, Any]) -> EncodedPrompt:
        raise NotImplementedError

    def _decoder(self) -> torch.nn.Module:
        """The language model body (embeddings in, final hidden states out)."""
        raise NotImplementedError

    def _decoder_positions(self, position_ids: torch.Tensor) -> torch.Tensor:
        """`EncodedPrompt`-style positions [D, B, L] in the layout the decoder takes."""
        raise NotImplementedError

    def _hidden_states(
        self,
        embeds: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        past_key_values: Any = None,
        use_cache: bool = False,
    ) -> tuple[torch.Tensor, Any]:
        """Final hidden states [B, L, H] for embeddings [B, L, H] and positions [D, B, L] (+ the KV cache when
        `use_cache`); `attention_mask` [B, past + L] covers the cached prefix too."""
        out = self._decoder()(
            inputs_embeds=embeds,
            attention_mask=attention_mask,
            position_ids=self._decoder_positions(position_ids),
            past_key_values=past_key_values,
            use_cache=use_cache,
        )
        return out.last_hidden_state, out.past_key_values if use_cache else None

    def _lm_head(self) -> torch.nn.Module:
        return self.base_model.get_output_embeddings()

    def token_logprobs(
        self, prompt: EncodedPrompt, completion_ids: torch.Tensor, completion_mask: torch.Tensor
    ) -> torch.Tensor:
        """log p(completion_ids[:, t] | prompt, completion[:, :t]) → [B, C]; masked positions hold 0."""
        return self.score_completions(prompt, completion_ids, completion_mask).logprobs

    def can_share_prefix(self) -> bool:
        """Whether a prompt's KV cache can serve its G completions: not while gradient checkpointing trains (it
        recomputes layers without a cache). The ONE rule of every grouped log-prob pass."""
        model = self._require_model()
        return not (activation_checkpointing(self.base_model) and model.training)

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
        """Log-probs and entropies of the completion tokens, [B·G, C] each, masked to 0, under the distribution
        `generate` samples from at `temperature` (`sampling_distribution`: logits / T, media ids suppressed); with
        `filters` (top-k/top-p/min-p) on, also the sampler's own log-probs under them, from the same logits.

        prompt [B] with G = `group_size` completions per prompt (rows of a prompt contiguous, as `generate`
        returns them). Only the completion slice goes through the LM head (a full-vocab prompt slice would cost
        B·P·V floats for nothing), in chunks (`chunked_token_scores`), so float32 logits of the whole batch never
        exist. With `share_prefix` (and `can_share_prefix()`), each prompt runs through the language model once
        and its KV cache is shared by its G completions — the same values and gradients (the cache is expanded
        with a differentiable `repeat_interleave`), (G-1)/G of the prompt compute saved; else the prompt is
        repeated G times and every row runs its own.
        """
        self._check_samplable(completion_ids, completion_mask)
        dist = self.sampling_distribution(temperature, filters)
        b, n = prompt.batch_size, completion_ids.shape[0]
        if n != b * group_size:
            raise ValueError(f"the {n} completion rows are not groups of {group_size} for {b} prompts")
        if group_size > 1 and share_prefix and self.can_share_prefix():
            return self._score_with_shared_prefix(
                prompt, completion_ids, completion_mask, group_size, dist, chunk_tokens
            )
        prompt = prompt.repeat_interleave(group_size) if group_size > 1 else prompt  # [N]
        embed = self.base_model.get_input_embeddings()
        comp_embeds = embed(completion_ids).to(prompt.inputs_embeds.dtype)  # [N, C, H]
        embeds = torch.cat([prompt.inputs_embeds, comp_embeds], dim=1)  # [N, P+C, H]
        mask = torch.cat([prompt.attention_mask, completion_mask.to(prompt.attention_mask.dtype)], dim=1)
        dims = prompt.position_ids.shape[0]
        comp_pos = completion_positions(prompt.next_position, completion_ids.shape[1], dims)
        positions = torch.cat([prompt.position_ids, comp_pos], dim=2)  # [D, N, P+C]
        hidden, _ = self._hidden_states(embeds, mask, positions)  # [N, P+C, H]
        p = prompt.input_ids.shape[1]
        return self._masked_scores(hidden[:, p - 1 : -1], completion_ids, completion_mask, dist, chunk_tokens)

    def _masked_scores(
        self,
        hidden: torch.Tensor,
        completion_ids: torch.Tensor,
        completion_mask: torch.Tensor,
        dist: SamplingDistribution,
        chunk_tokens: int | None,
    ) -> TokenScores:
        """hidden [N, C, H] (position t predicts completion token t) → masked `TokenScores` [N, C]."""
        scores = chunked_token_scores(
            hidden, self._lm_head(), completion_ids, distribution=dist, chunk_tokens=chunk_tokens
        )
        keep = completion_mask.bool()  # `where`, not a product: a suppressed pad id after EOS scores -inf
        q = scores.sampler_logprobs
        return TokenScores(
            logprobs=torch.where(keep, scores.logprobs, 0.0),
            entropy=torch.where(keep, scores.entropy, 0.0),
            sampler_logprobs=None if q is None else torch.where(keep, q, 0.0),
        )

    def _check_samplable(self, completion_ids: torch.Tensor, completion_mask: torch.Tensor) -> None:
        """Refuse completions that hold a suppressed id: the sampler never draws one, its log-prob is -inf."""
        suppressed = torch.tensor(self.sampling_distribution().suppressed, device=completion_ids.device)
        if torch.isin(completion_ids[completion_mask.bool()], suppressed).any():
            raise ValueError(f"completion tokens include suppressed media ids {suppressed.tolist()}: not sampled here")

    def _score_with_shared_prefix(
        self,
        prompt: EncodedPrompt,
        completion_ids: torch.Tensor,
        completion_mask: torch.Tensor,
        group: int,
        dist: SamplingDistribution,
        chunk_tokens: int | None,
    ) -> TokenScores:
        """`score_completions` with one pass of each of the B prompts for its `group` completions (see there)."""
        hidden, cache = self._hidden_states(
            prompt.inputs_embeds, prompt.attention_mask, prompt.position_ids, use_cache=True
        )  # [B, P, H] + KV cache of the prompt
        cache.batch_repeat_interleave(group)  # [N, heads, P, d]: differentiable, gradients flow back per group
        embed = self.base_model.get_input_embeddings()
        comp_embeds = embed(completion_ids).to(prompt.inputs_embeds.dtype)  # [N, C, H]
        mask = torch.cat(
            [prompt.attention_mask.repeat_interleave(group, 0), completion_mask.to(prompt.attention_mask.dtype)], dim=1
        )  # [N, P+C]
        dims = prompt.position_ids.shape[0]
        comp_pos = completion_positions(prompt.next_position.repeat_interleave(group), completion_ids.shape[1], dims)
        comp_hidden, _ = self._hidden_states(comp_embeds, mask, comp_pos, past_key_values=cache, use_cache=True)
        last = hidden[:, -1:].repeat_interleave(group, 0)  # [N, 1, H]: the prompt's last position predicts token 0
        scoring = torch.cat([last, comp_hidden[:, :-1]], dim=1)  # [N, C, H]
        return self._masked_scores(scoring, completion_ids, completion_mask, dist, chunk_tokens)

    # Config attributes under which HF multimodal models name their media placeholder / boundary tokens.
    _MEDIA_TOKEN_ATTRS = (
        "image_token_id", "video_token_id", "audio_token_id", "image_token_index", "video_token_index",
        "audio_token_index", "vision_start_token_id", "vision_end_token_id", "audio_start_token_id",
        "audio_end_token_id",
    )  # fmt: skip

    def media_token_ids(self) -> list[int]:
        """Media placeholder/boundary ids from the model config (none for a text LM): never valid in a completion."""
        cfg = self.base_model.config
        ids = {getattr(cfg, a, None) for a in self._MEDIA_TOKEN_ATTRS}
        return sorted(int(i) for i in ids if isinstance(i, int) and i >= 0)

    def sampling_distribution(
        self, temperature: float = 1.0, filters: SamplingFilters = SamplingFilters()
    ) -> SamplingDistribution:
        """The distribution `generate` samples from at `temperature` with `filters`, whose policy π
        `score_completions` scores under: the ONE place that says which ids are suppressed (the media placeholders)."""
        return SamplingDistribution(temperature, tuple(self.media_token_ids()), filters)

    def generate(
        self, prompt: EncodedPrompt, *, group_size: int = 1, share_prefix: bool = True, **generation_kwargs: Any
    ) -> torch.Tensor:
        """Completion ids [B·G, C] generated from the cached prompt encoding (media encoders do not run).

        Sampling always runs in `eval()` mode (restored after): in train mode with gradient checkpointing, HF
        turns the KV cache off inside the layers while generation still feeds one token at a time, which
        silently gives wrong samples. `group_size=G` samples G completions per prompt (rows of a prompt
        contiguous, as `repeat_interleave(G)`) and, with `share_prefix`, prefills each prompt ONCE: its KV cache
        is expanded G times and the G rows decode from it, so the prompt (hundreds of media tokens) runs through
        the language model B times instead of B·G. The samples are those of `generate(prompt.repeat_interleave(G))`
        (docs/method.md §4: same positions, masks, logits processors and random draws). G = 1 is the plain path.
        """
        model = self._require_model()
        if group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {group_size}")
        if group_size > 1 and generation_kwargs.get("num_return_sequences", 1) != 1:
            raise ValueError("pass group_size or num_return_sequences, not both")
        tok = self.tokenizer
        generation_kwargs.setdefault("pad_token_id", tok.pad_token_id)
        generation_kwargs.setdefault("eos_token_id", tok.eos_token_id)
        # A sampled media placeholder would be scattered over by nothing (a tiny policy did sample <|VIDEO|>);
        # the scorer suppresses the same ids (`sampling_distribution`), so log-probs are the sampler's.
        suppressed = self.sampling_distribution().suppressed
        suppress = set(generation_kwargs.pop("suppress_tokens", None) or []) | set(suppressed)
        if suppress:
            generation_kwargs["suppress_tokens"] = sorted(suppress)
        with eval_mode(model):
            if group_size > 1 and share_prefix and prompt.input_ids.shape[1] > 1:
                inputs = self._shared_prefill_inputs(prompt, group_size)
            else:
                prompt = prompt.repeat_interleave(group_size) if group_size > 1 else prompt
                inputs = {
                    "input_ids": prompt.input_ids,
                    "inputs_embeds": prompt.inputs_embeds,
                    "attention_mask": prompt.attention_mask,
                    **prompt.generate_kwargs,
                }
            if not isinstance(model, Generates):
                raise TypeError(f"{type(model).__name__} has no generate(): not a generative HF model")
            out = model.generate(**inputs, use_cache=True, **generation_kwargs)
        return out[:, prompt.input_ids.shape[1] :]

    def eos_token_ids(self) -> list[int]:
        """Every id that ends a completion: the tokenizer's EOS and the model's generation-config EOS ids."""
        ids: set[int] = set()
        tok_eos = getattr(self.tokenizer, "eos_token_id", None)
        if isinstance(tok_eos, int):
            ids.add(tok_eos)
        gen = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        ids |= {gen} if isinstance(gen, int) else set(gen or [])
        return sorted(ids)

    def eos_texts(self) -> tuple[str, ...]:
        """The end-of-sequence tokens as text (what a decoder may leave at the end of a completion): the EOS ids'
        tokens and the chat template's turn ends (`chat_turn_ends`)."""
        tok = self.tokenizer
        texts = {tok.eos_token, *tok.convert_ids_to_tokens(self.eos_token_ids()), *self.chat_turn_ends}
        return tuple(sorted(t for t in texts if t))

    def completion_mask(self, completion_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mask [N, C] bool, truncated [N] bool) of generated ids: tokens up to and including the first EOS."""
        return completion_mask(completion_ids, self.eos_token_ids())

    def _shared_prefill_inputs(self, prompt: EncodedPrompt, group: int) -> dict[str, Any]:
        """`model.generate` inputs that continue G rows per prompt from ONE prefill of each prompt.

        The first P-1 prompt positions run once per prompt ([B] rows) and their KV cache is expanded to the B·G
        rows; HF `generate` then feeds the last prompt position itself (from `inputs_embeds`, of which it reads
        only the uncached tail: a stride-0 view of the last embedding stands in for the rest, no [B·G, P, H]
        copy), so the first token comes from the same logits as a full prefill. Positions are passed explicitly
        (the encoding's own, e.g. Omni's 3-D TMRoPE ones) and HF continues them at last + 1 = `next_position`,
        which is why grids and the audio-in-video flag are not needed here.
        """
        p = prompt.input_ids.shape[1]
        with torch.no_grad():
            _, cache = self._hidden_states(
                prompt.inputs_embeds[:, : p - 1],
                prompt.attention_mask[:, : p - 1],
                prompt.position_ids[..., : p - 1],
                use_cache=True,
            )  # KV cache [B, heads, P-1, d] per layer
        if cache is None or cache.get_seq_length() != p - 1:  # e.g. train mode + gradient checkpointing
            raise RuntimeError("shared prefill got no KV cache from the decoder: generate in eval() mode")
        cache.batch_repeat_interleave(group)  # [B·G, heads, P-1, d]
        last = prompt.inputs_embeds[:, -1:].repeat_interleave(group, 0)  # [B·G, 1, H]
        return {
            "input_ids": prompt.input_ids.repeat_interleave(group, 0),  # [B·G, P]
            "inputs_embeds": last.expand(-1, p, -1),  # [B·G, P, H] view; only position P-1 is read
            "attention_mask": prompt.attention_mask.repeat_interleave(group, 0),  # [B·G, P]
            "position_ids": self._decoder_positions(prompt.position_ids.repeat_interleave(group, 1)),
            "past_key_values": cache,
        }

    def decode(self, token_ids: torch.Tensor) -> list[str]:
        return self.tokenizer.batch_decode(token_ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
