"""Shared loading and scoring for backbones built on Hugging Face `PreTrainedModel`s.

One place does what every family needs: resolve the weights offline, pick dtype/attention, quantise with
bitsandbytes (8-bit, or 4-bit QLoRA), freeze, turn on gradient checkpointing, wrap in peft LoRA (or load an
existing adapter), and score and sample completions from an `EncodedPrompt` (`ecr.models.decoding`). A family
subclass says which model class and processor to load, which modules are media towers, and how media become embeddings.
"""

from __future__ import annotations

import contextlib
import logging
import re
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch

from ecr.errors import ConfigError
from ecr.extras import check_installed, require_version
from ecr.hub import resolve_pretrained
from ecr.models.backbone import CollateMode
from ecr.models.config import PolicyConfig
from ecr.models.decoding import HFDecoding

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedModel
    from typing_extensions import TypeIs

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "auto": "auto"}
# Keys of a collated batch that are bookkeeping, not model inputs.
META_KEYS = ("meta", "labels")


def model_inputs(batch: Mapping[str, Any]) -> dict[str, Any]:
    """The tensors of a collated batch that the model's forward takes."""
    return {k: v for k, v in batch.items() if k not in META_KEYS}


def peft_wrapped(model: object) -> TypeIs[PeftModel]:
    """Whether `model` is a peft wrapper (LoRA or a loaded adapter), told by its API so that a plain model never
    imports peft."""
    return hasattr(model, "get_base_model")


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


class HFBackbone(HFDecoding):
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
    def hf_model(self) -> PreTrainedModel | PeftModel:
        """The loaded model as `load()` stores it: a transformers model, or the peft wrapper around one."""
        return cast("PreTrainedModel | PeftModel", self._require_model())  # `model` is declared an nn.Module

    @property
    def base_model(self) -> PreTrainedModel:
        """The underlying transformers model (LoRA layers, if any, are injected in place)."""
        model = self.hf_model
        if peft_wrapped(model):
            return cast("PreTrainedModel", model.get_base_model())  # peft annotates it as an nn.Module
        return model

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
    def prompt_encoding_is_trainable(self) -> bool:
        embeddings = self.base_model.get_input_embeddings()
        return bool(self.trainable_towers()) or any(p.requires_grad for p in embeddings.parameters())

    @contextlib.contextmanager
    def adapter_disabled(self) -> Iterator[None]:
        """Run the base weights only: the frozen reference policy of GRPO, with no second model copy.

        A prompt encoded with the adapter on stays valid here as long as the towers and embeddings are frozen
        (LoRA sits in the language model only); with a trained tower, encode the reference prompt inside too.
        """
        model = self.hf_model
        if not peft_wrapped(model):
            raise ConfigError("adapter_disabled() needs a LoRA policy (policy.lora.enabled or policy.adapter)")
        with model.disable_adapter():
            yield

    # ----------------------------------------------------------------------------------------- saving
    def trainable_parameter_names(self) -> list[str]:
        return [n for n, p in self._require_model().named_parameters() if p.requires_grad]

    def save_pretrained(self, out_dir: str | Path, *, merged: bool = False) -> Path:
        """Adapters in PEFT format (LoRA) or the full model folder (full fine-tune); + processor.

        merged=True folds LoRA into the weights (needs an unquantised model: see `ecr.export`).
        """
        out = Path(out_dir)
        model = self.hf_model
        if merged and peft_wrapped(model) and hasattr(model, "merge_and_unload"):
            if self.config.quantization != "none":
                raise ConfigError("merging LoRA into quantised weights is lossy: reload with quantization=none")
            model = model.merge_and_unload()
            self.model = model
        model.save_pretrained(str(out))  # peft takes a str
        self.processor.save_pretrained(out)
        return out


def module_regex(prefix: str, names: list[str]) -> str:
    """Full-match regex for `names` (e.g. q_proj) inside the numbered layers under `prefix`."""
    return rf"^{re.escape(prefix)}\.\d+\.(?:\w+\.)*(?:{'|'.join(map(re.escape, names))})$"
