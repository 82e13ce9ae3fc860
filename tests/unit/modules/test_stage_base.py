"""The plumbing every training stage shares (`ecr.modules.base`, `.optim`, `.checkpointing`): optimiser/schedule
injection, trainable-only checkpoints."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from ecr.errors import ConfigError
from ecr.modules.base import StageModule
from ecr.modules.optim import OptimizationSettings, decay_groups


class TinyStage(StageModule):
    """A linear layer + a layer norm (trainable), a frozen embedding, a persistent and a transient buffer."""

    def __init__(self, optimizer=None, **optim) -> None:
        kw = {"lr": 0.1, "weight_decay": 0.0, "warmup_ratio": 0.25, "scheduler": "cosine"}
        super().__init__(OptimizationSettings(**{**kw, **optim}), optimizer)
        self.linear = torch.nn.Linear(3, 2)
        self.norm = torch.nn.LayerNorm(2)
        self.frozen = torch.nn.Embedding(4, 3).requires_grad_(False)
        self.register_buffer("tau", torch.tensor(0.3))
        self.register_buffer("scratch", torch.zeros(2), persistent=False)
        self._trainer = SimpleNamespace(estimated_stepping_batches=8)  # what configure_optimizers reads

    def configure_model(self) -> None:  # weights exist already
        pass


def test_decay_groups_split_only_when_weight_decay_applies() -> None:
    m = TinyStage()
    assert len(decay_groups(m.named_parameters(), 0.0)) == 1  # logged as plain `lr`
    decayed, plain = decay_groups(m.named_parameters(), 0.01)
    assert [p.shape for p in decayed["params"]] == [torch.Size([2, 3])]  # only the matrix is decayed
    assert plain["weight_decay"] == 0.0 and len(plain["params"]) == 3  # linear bias, norm weight and bias
    assert all(p.requires_grad for g in (decayed, plain) for p in g["params"])  # the frozen embedding is absent


def test_default_adamw_with_warmup_then_the_named_schedule() -> None:
    m = TinyStage(weight_decay=0.05, scheduler="linear")
    conf = m.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    assert isinstance(opt, torch.optim.AdamW) and [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.0]
    lrs = []
    for _ in range(8):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == 0.0 and lrs[2] == pytest.approx(0.1) and lrs[-1] < lrs[2]  # 2 warmup steps (0.25 * 8)
    assert conf["lr_scheduler"]["name"] == "lr"


def test_an_injected_optimizer_keeps_its_own_settings() -> None:
    m = TinyStage(optimizer=lambda params: torch.optim.SGD(params, lr=0.5, weight_decay=0.2))
    opt = m.configure_optimizers()["optimizer"]
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["lr"] == 0.5
    assert [g["weight_decay"] for g in opt.param_groups] == [0.2, 0.0]  # its decay, never on biases/norms


def test_unknown_schedule_or_nothing_to_train_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="scheduler"):
        TinyStage(scheduler="sawtooth").configure_optimizers()
    frozen = TinyStage()
    frozen.requires_grad_(False)
    with pytest.raises(ConfigError, match="no trainable parameters"):
        frozen.configure_optimizers()
    with pytest.raises(ConfigError, match="warmup_ratio"):
        TinyStage(warmup_ratio=1.0)


def test_checkpoints_keep_trained_tensors_and_own_buffers_only() -> None:
    m = TinyStage()
    ckpt = {"state_dict": m.state_dict()}
    m.on_save_checkpoint(ckpt)
    assert set(ckpt["state_dict"]) == {"linear.weight", "linear.bias", "norm.weight", "norm.bias", "tau"}
    other = TinyStage()
    other.tau.fill_(0.0)
    other.load_state_dict(ckpt["state_dict"])
    assert float(other.tau) == pytest.approx(0.3) and torch.equal(other.linear.weight, m.linear.weight)
    partial = {k: v for k, v in ckpt["state_dict"].items() if k != "tau"}
    with pytest.raises(ConfigError, match=r"missing \['tau'\]"):
        other.load_state_dict(partial)
    with pytest.raises(ConfigError, match="unexpected"):
        other.load_state_dict({**ckpt["state_dict"], "head.weight": torch.zeros(1)})
