"""Shared loading and scoring for backbones built on Hugging Face `PreTrainedModel`s.

One place does what every family needs: resolve the weights offline, pick dtype/attention, quantise with
bitsandbytes (8-bit, or 4-bit QLoRA), freeze, turn on gradient checkpointing, wrap in peft LoRA (or load an
existing adapter), and score completions from an `EncodedPrompt`. A family subclass says which model class
and processor to load, which modules are media towers, and how media become embeddings.
"""

from __future__ import annotations

import contextlib
import logging
import re
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from ecr.errors import ConfigError
from ecr.extras import check_installed, require_version
from ecr.hub import resolve_pretrained
from ecr.models.backbone import (
    CollateMode,
    EncodedPrompt,
    SamplingDistribution,
    TokenScores,
    chunked_token_scores,
    completion_positions,
)
from ecr.models.config import PolicyConfig

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "auto": "auto"}
# Keys of a collated batch that are bookkeeping, not model inputs.
META_KEYS = ("meta", "labels")


def model_inputs(batch: Mapping[str, Any]) -> dict[str, Any]:
    """The tensors of a collated batch that the model's forward takes."""
    return {k: v for k, v in batch.items() if k not in META_KEYS}


def quantization_config(cfg: PolicyConfig, skip_modules: list[str]) -> Any | None:
    """bitsandbytes config for `cfg.quantization`; `skip_modules` stay unquantised (heads, towers)."""
    if cfg.quantization == "none":
        return None
    check_installed("bitsandbytes", f"policy.quantization={cfg.quantization} (bitsandbytes)")
    from transformers import BitsAndBytesConfig

    if cfg.quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip_modules)
    compute = torch.bfloat16 if cfg.dtype in ("auto", "bfloat16") else _DTYPES[cfg.dtype]
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute,
        llm_int8_skip_modules=skip_modules,
    )


class HFBackbone:
    """Base of the Hugging Face backbones (implements `PolicyBackbone` except the family-specific parts)."""

    name = "hf"
    model_class: Any = None  # e.g. transformers.AutoModelForCausalLM
    tower_prefixes: dict[str, str] = {}  # {"vision": "model.visual", ...} module names of the media towers
    min_transformers: str | None = None  # the oldest transformers whose model class has this family's layout
    default_lora_targets: str | list[str] = "all-linear"
    always_skip_quantization: tuple[str, ...] = ("lm_head",)

    def __init__(self, config: PolicyConfig) -> None:
        self.config = config
        self.model: torch.nn.Module | None = None
        self._processor: Any = None
        self._path: Path | None = None

    # ----------------------------------------------------------------------------------------- loading
    @property
    def path(self) -> Path:
        if self._path is None:
            self._path = resolve_pretrained(self.config.model, self.config.revision)
        return self._path

    @property
    def processor(self) -> Any:
        """Tokenizer or multimodal processor (cheap; loaded on first use)."""
        if self._processor is None:
            self._processor = self.load_processor(self.path)
        return self._processor

    @property
    def tokenizer(self) -> Any:
        return getattr(self.processor, "tokenizer", self.processor)

    def load_processor(self, path: Path) -> Any:
        raise NotImplementedError

    def chat_settings(self, mode: CollateMode) -> dict[str, Any]:
        """The `ChatCollator` fields every family sets the same way (processor, mode, prompt, length limit)."""
        inp = self.config.inputs
        return {
            "processor": self.processor,
            "mode": mode,
            "instruction": inp.instruction,
            "system": inp.system,
            "max_length": inp.max_length,
        }

    def frozen_towers(self) -> list[str]:
        """Module prefixes of the towers that stay frozen under this config."""
        frozen = {"vision": self.config.freeze_vision, "audio": self.config.freeze_audio}
        return [p for kind, p in self.tower_prefixes.items() if frozen.get(kind, True)]

    def trainable_towers(self) -> list[str]:
        return [p for p in self.tower_prefixes.values() if p not in self.frozen_towers()]

    def _skip_quantization(self) -> list[str]:
        skip = list(self.always_skip_quantization)
        if not self.config.quantize_towers:
            skip += list(self.tower_prefixes.values())  # transformers matches these from the module-name start
        return skip

    def load(self, device: torch.device | str | None = None) -> torch.nn.Module:
        """Load weights, quantise, freeze, add LoRA. Idempotent: a second call returns the same module."""
        if self.model is not None:
            return self.model
        if self.min_transformers:
            require_version("transformers", self.min_transformers, f"the {self.name} backbone (its module layout)")
        cfg = self.config
        kwargs: dict[str, Any] = {"dtype": _DTYPES[cfg.dtype], "local_files_only": True}
        if cfg.attn_implementation:
            kwargs["attn_implementation"] = cfg.attn_implementation
        qconfig = quantization_config(cfg, self._skip_quantization())
        if qconfig is not None:
            kwargs["quantization_config"] = qconfig
            # bitsandbytes warns on every 8-bit matmul that fp32 inputs are cast to fp16 (expected, not news).
            warnings.filterwarnings("ignore", message="MatMul8bitLt: inputs will be cast")
            # bitsandbytes places weights at load time; the Trainer's later `.to()` is then a no-op.
            kwargs["device_map"] = {"": torch.device(device) if device is not None else "cpu"}
        model = self.model_class.from_pretrained(self.path, **kwargs)
        model.config.use_cache = False
        for prefix in self.frozen_towers():
            model.get_submodule(prefix).requires_grad_(False)
        if cfg.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model = self._adapt(model)
        model.train()  # from_pretrained returns eval mode; Lightning switches modes per loop from here
        self.model = model
        n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
        n_all = sum(p.numel() for p in model.parameters())
        log.info(
            "loaded %s from %s: %s / %s parameters trainable",
            self.name,
            self.path,
            f"{n_train:,}",
            f"{n_all:,}",
        )
        return model

    def lora_targets(self) -> str | list[str]:
        return self.config.lora.target_modules or self.default_lora_targets

    def _adapt(self, model: torch.nn.Module) -> torch.nn.Module:
        cfg = self.config
        if cfg.adapter is not None:
            from peft import PeftModel

            adapter = resolve_pretrained(cfg.adapter)
            return PeftModel.from_pretrained(model, str(adapter), is_trainable=True)
        if not cfg.lora.enabled:
            return model
        from peft import LoraConfig, get_peft_model

        lcfg = LoraConfig(
            r=cfg.lora.r,
            lora_alpha=cfg.lora.alpha,
            lora_dropout=cfg.lora.dropout,
            target_modules=self.lora_targets(),
            modules_to_save=list(cfg.lora.modules_to_save) + self.trainable_towers() or None,
            bias="none",
        )
        peft_model = get_peft_model(model, lcfg)
        if not any("lora_" in n for n, _ in peft_model.named_parameters()):
            raise ConfigError(f"policy.lora.target_modules={lcfg.target_modules!r} matched no module of {self.path}")
        return peft_model

    @property
    def base_model(self) -> torch.nn.Module:
        """The underlying transformers model (LoRA layers, if any, are injected in place)."""
        model = self._require_model()
        return model.get_base_model() if hasattr(model, "get_base_model") else model

    def _require_model(self) -> torch.nn.Module:
        if self.model is None:
            raise ConfigError(f"backbone {self.name}: call load() (LightningModule.configure_model) before use")
        return self.model

    # ----------------------------------------------------------------------------------------- training
    def loss(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, int]:
        """Mean cross-entropy over the assistant tokens (labels != -100) and their count."""
        labels = batch["labels"]
        out = self._require_model()(**model_inputs(batch), labels=labels, use_cache=False)
        return out.loss, int((labels[:, 1:] != -100).sum())

    # ----------------------------------------------------------------------------- encode-once scoring
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

    def score_completions(
        self,
        prompt: EncodedPrompt,
        completion_ids: torch.Tensor,
        completion_mask: torch.Tensor,
        *,
        temperature: float = 1.0,
        chunk_tokens: int | None = None,
        shared_prefix: int = 1,
    ) -> TokenScores:
        """Log-probs and entropies of the completion tokens, [B, C] each, masked to 0, under the distribution
        `generate` samples from at `temperature` (`sampling_distribution`: logits / T, media ids suppressed).

        Only the completion slice goes through the LM head (a full-vocab prompt slice would cost B·P·V floats
        for nothing), in chunks (`chunked_token_scores`), so float32 logits of the whole batch never exist.
        `shared_prefix=G` says that each run of G consecutive rows holds the SAME prompt (`repeat_interleave(G)`,
        GRPO's groups): the prompt then runs through the language model once per group and its KV cache is
        shared by the G completions — the same values and gradients (the cache is expanded with a
        differentiable `repeat_interleave`), (G-1)/G of the prompt compute saved. Refused while gradient
        checkpointing trains (it recomputes layers without a cache).
        """
        self._check_samplable(completion_ids, completion_mask)
        if shared_prefix > 1:
            return self._score_with_shared_prefix(
                prompt, completion_ids, completion_mask, shared_prefix, temperature, chunk_tokens
            )
        embed = self.base_model.get_input_embeddings()
        comp_embeds = embed(completion_ids).to(prompt.inputs_embeds.dtype)  # [B, C, H]
        embeds = torch.cat([prompt.inputs_embeds, comp_embeds], dim=1)  # [B, P+C, H]
        mask = torch.cat([prompt.attention_mask, completion_mask.to(prompt.attention_mask.dtype)], dim=1)
        dims = prompt.position_ids.shape[0]
        comp_pos = completion_positions(prompt.next_position, completion_ids.shape[1], dims)
        positions = torch.cat([prompt.position_ids, comp_pos], dim=2)  # [D, B, P+C]
        hidden, _ = self._hidden_states(embeds, mask, positions)  # [B, P+C, H]
        p = prompt.input_ids.shape[1]
        return self._masked_scores(hidden[:, p - 1 : -1], completion_ids, completion_mask, temperature, chunk_tokens)

    def _masked_scores(
        self,
        hidden: torch.Tensor,
        completion_ids: torch.Tensor,
        completion_mask: torch.Tensor,
        temperature: float,
        chunk_tokens: int | None,
    ) -> TokenScores:
        """hidden [B, C, H] (position t predicts completion token t) → masked `TokenScores` [B, C]."""
        dist = self.sampling_distribution(temperature)
        scores = chunked_token_scores(
            hidden, self._lm_head(), completion_ids, distribution=dist, chunk_tokens=chunk_tokens
        )
        keep = completion_mask.bool()  # `where`, not a product: a suppressed pad id after EOS scores -inf
        return TokenScores(
            logprobs=torch.where(keep, scores.logprobs, 0.0), entropy=torch.where(keep, scores.entropy, 0.0)
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
        temperature: float,
        chunk_tokens: int | None,
    ) -> TokenScores:
        """`score_completions` with one prompt pass per group of `group` identical rows (see there)."""
        model = self._require_model()
        if getattr(self.base_model, "is_gradient_checkpointing", False) and model.training and torch.is_grad_enabled():
            raise ConfigError("shared_prefix scoring cannot run under gradient checkpointing (it needs the KV cache)")
        n = prompt.input_ids.shape[0]
        if n % group or not torch.equal(prompt.input_ids[::group].repeat_interleave(group, 0), prompt.input_ids):
            raise ValueError(f"shared_prefix={group}: the {n} prompt rows are not groups of {group} identical prompts")
        heads = slice(None, None, group)  # one row per group: [B = N/G]
        hidden, cache = self._hidden_states(
            prompt.inputs_embeds[heads], prompt.attention_mask[heads], prompt.position_ids[:, heads], use_cache=True
        )  # [B, P, H] + KV cache of the prompt
        cache.batch_repeat_interleave(group)  # [N, heads, P, d]: differentiable, gradients flow back per group
        embed = self.base_model.get_input_embeddings()
        comp_embeds = embed(completion_ids).to(prompt.inputs_embeds.dtype)  # [N, C, H]
        mask = torch.cat([prompt.attention_mask, completion_mask.to(prompt.attention_mask.dtype)], dim=1)
        dims = prompt.position_ids.shape[0]
        comp_pos = completion_positions(prompt.next_position, completion_ids.shape[1], dims)  # [D, N, C]
        comp_hidden, _ = self._hidden_states(comp_embeds, mask, comp_pos, past_key_values=cache, use_cache=True)
        last = hidden[:, -1:].repeat_interleave(group, 0)  # [N, 1, H]: the prompt's last position predicts token 0
        scoring = torch.cat([last, comp_hidden[:, :-1]], dim=1)  # [N, C, H]
        return self._masked_scores(scoring, completion_ids, completion_mask, temperature, chunk_tokens)

    def prompt_encoding_is_trainable(self) -> bool:
        embeddings = self.base_model.get_input_embeddings()
        return bool(self.trainable_towers()) or any(p.requires_grad for p in embeddings.parameters())

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

    def sampling_distribution(self, temperature: float = 1.0) -> SamplingDistribution:
        """The distribution `generate` samples from at `temperature` and `score_completions` scores under: the
        ONE place that says which ids are suppressed (the media placeholders)."""
        return SamplingDistribution(temperature=temperature, suppressed=tuple(self.media_token_ids()))

    @contextlib.contextmanager
    def adapter_disabled(self) -> Iterator[None]:
        """Run the base weights only: the frozen reference policy of GRPO, with no second model copy.

        A prompt encoded with the adapter on stays valid here as long as the towers and embeddings are frozen
        (LoRA sits in the language model only); with a trained tower, encode the reference prompt inside too.
        """
        model = self._require_model()
        if not hasattr(model, "disable_adapter"):
            raise ConfigError("adapter_disabled() needs a LoRA policy (policy.lora.enabled or policy.adapter)")
        with model.disable_adapter():
            yield

    def generate(self, prompt: EncodedPrompt, *, group_size: int = 1, **generation_kwargs: Any) -> torch.Tensor:
        """Completion ids [B·G, C] generated from the cached prompt encoding (media encoders do not run).

        `group_size=G` samples G completions per prompt (rows of a prompt contiguous, as `repeat_interleave(G)`)
        and prefills each prompt ONCE: its KV cache is expanded G times and the G rows decode from it, so the
        prompt (hundreds of media tokens) runs through the language model B times instead of B·G. The samples
        are those of `generate(prompt.repeat_interleave(G))` (docs/method.md §4: same positions, masks, logits
        processors and random draws). G = 1 is the plain path.
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
        if group_size > 1 and prompt.input_ids.shape[1] > 1:
            inputs = self._shared_prefill_inputs(prompt, group_size)
        else:
            prompt = prompt.repeat_interleave(group_size) if group_size > 1 else prompt
            inputs = {
                "input_ids": prompt.input_ids,
                "inputs_embeds": prompt.inputs_embeds,
                "attention_mask": prompt.attention_mask,
                **prompt.generate_kwargs,
            }
        out = model.generate(**inputs, use_cache=True, **generation_kwargs)
        return out[:, prompt.input_ids.shape[1] :]

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

    # ----------------------------------------------------------------------------------------- saving
    def trainable_parameter_names(self) -> list[str]:
        return [n for n, p in self._require_model().named_parameters() if p.requires_grad]

    def save_pretrained(self, out_dir: str | Path, *, merged: bool = False) -> Path:
        """Adapters in PEFT format (LoRA) or the full model folder (full fine-tune); + processor.

        merged=True folds LoRA into the weights (needs an unquantised model: see `ecr.export`).
        """
        out = Path(out_dir)
        model = self._require_model()
        if merged and hasattr(model, "merge_and_unload"):
            if self.config.quantization != "none":
                raise ConfigError("merging LoRA into quantised weights is lossy: reload with quantization=none")
            model = model.merge_and_unload()
            self.model = model
        model.save_pretrained(out)
        self.processor.save_pretrained(out)
        return out


def module_regex(prefix: str, names: list[str]) -> str:
    """Full-match regex for `names` (e.g. q_proj) inside the numbered layers under `prefix`."""
    return rf"^{re.escape(prefix)}\.\d+\.(?:\w+\.)*(?:{'|'.join(map(re.escape, names))})$"
