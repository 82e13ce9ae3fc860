"""GRPO with real Lightning fits on the tiny Omni model and real synthetic clips.

- the loop learns: with a dense reward (share of the completion's letters that are vowels) the mean reward of a
  random tiny policy rises within a few dozen steps, and the LoRA adapters are what moved;
- encode once: forward hooks on the vision and audio towers count exactly one run per prompt batch per step,
  with μ = 2 updates and an adapter-disabled reference pass in the same step;
- a non-finite loss is never applied: the step is skipped and counted, and consecutive skips stop the run;
- the explanation reward runs end to end with a verifier folder (a tiny random BERT classifier);
- rollouts from one shared prefill per prompt equal rollouts on G repeated prompts;
- (slow) from a tiny SFT policy the real reward (format + accuracy + explanation) rises, and the format reward
  alone teaches the format to a policy that writes it only sometimes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import pytest
import torch
from support.equivalence import assert_same_update, one_step
from support.tiny import SMALL, clip_data, cpu_trainer, synth_clips

from ecr.data import ClipDataModule
from ecr.errors import TrainingDivergedError
from ecr.fixtures import build_tiny_classifier, synthesize
from ecr.labels import resolve_label_space
from ecr.models import PolicyConfig
from ecr.modules.grpo import GRPOModule
from ecr.modules.wiring import connect
from ecr.rl.rewards import CombinedReward, RewardSpec
from ecr.rl.scorer import SamplingSettings


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    return synth_clips(tmp_path_factory.mktemp("clips"), num_clips=4, split="train")


def _data(root: Path, batch_size: int = 2, manifest: str = "manifest.jsonl") -> ClipDataModule:
    return clip_data(root, batch_size, manifest)


def _trainer(tmp: Path, max_steps: int, **kw) -> L.Trainer:
    return cpu_trainer(tmp, max_steps=max_steps, **kw)


def vowel_share(completions: Sequence[str], labels: Sequence[str]) -> list[float]:
    """Dense toy reward: the share of a completion's letters that are vowels (learnable from a random policy)."""
    out = []
    for text in completions:
        letters = [c for c in text.lower() if c.isalpha()]
        out.append(sum(c in "aeiou" for c in letters) / max(1, len(letters)))
    return out


class RewardHistory(L.Callback):
    def __init__(self) -> None:
        self.rewards: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.rewards.append(float(trainer.callback_metrics["train/reward"]))


def _module(tiny: Path, reward, lr: float = 1e-6, **grpo) -> GRPOModule:
    grpo.setdefault("log_completions_every_n_steps", 0)
    policy = PolicyConfig(model=str(tiny), lora={"r": 8, "alpha": 16, "dropout": 0.0}, inputs=SMALL)
    sampling = SamplingSettings(max_new_tokens=6, temperature=1.0)
    module = GRPOModule(policy, sampling=sampling, grpo=grpo, optimization={"lr": lr})
    module.reward = reward
    return module


def test_grpo_raises_a_dense_reward(tiny: Path, clips: Path, tmp_path: Path) -> None:
    """A full fine-tune of the random tiny policy (β = 0: no reference) on the vowel reward, 30 steps."""
    L.seed_everything(0)
    policy = PolicyConfig(model=str(tiny), lora={"enabled": False}, inputs=SMALL)
    module = GRPOModule(
        policy, sampling=SamplingSettings(max_new_tokens=6), grpo={"beta": 0.0}, optimization={"lr": 1e-2}
    )
    module.reward = CombinedReward([RewardSpec("vowels", vowel_share)])
    module.configure_model()
    start = {n: p.detach().clone() for n, p in module.model.named_parameters()}
    history = RewardHistory()
    _trainer(tmp_path, max_steps=30, callbacks=[history]).fit(module, datamodule=connect(module, _data(clips)))
    first, last = history.rewards[:5], history.rewards[-5:]
    assert sum(last) / len(last) > sum(first) / len(first) + 0.15, history.rewards
    moved = {n for n, p in module.model.named_parameters() if not torch.equal(p, start[n])}
    assert any(".language_model." in n for n in moved) and not any(".visual." in n or "audio_tower" in n for n in moved)
    assert module.nonfinite_skips == 0


def test_media_is_encoded_once_per_prompt_batch_per_step(tiny: Path, clips: Path, tmp_path: Path) -> None:
    module = _module(tiny, CombinedReward([RewardSpec("vowels", vowel_share)]), num_iterations=2, beta=0.04, lr=1e-3)
    module.configure_model()
    thinker = module.backbone.base_model
    calls = {"vision": 0, "audio": 0}
    thinker.model.visual.register_forward_hook(lambda *_: calls.__setitem__("vision", calls["vision"] + 1))
    thinker.model.audio_tower.register_forward_hook(lambda *_: calls.__setitem__("audio", calls["audio"] + 1))
    steps = 3  # micro-batches; each is trained on twice (μ = 2) with a reference pass: still one encoder run
    trainer = _trainer(tmp_path, max_steps=2 * steps)
    trainer.fit(module, datamodule=connect(module, _data(clips)))
    assert trainer.global_step == 2 * steps
    assert calls == {"vision": steps, "audio": steps}


def test_rollouts_with_a_shared_prefill_equal_repeated_prompts(tiny: Path, clips: Path) -> None:
    """`collect_rollout` samples from one prefill per prompt (`share_prefix`): the same seed gives the same
    completions, rewards, advantages and old/reference log-probs as sampling on G repeated prompts."""
    from ecr.models import load_policy
    from ecr.rl.rollout import collect_rollout
    from ecr.rl.scorer import GroupScorer

    torch.manual_seed(0)
    bb = load_policy(PolicyConfig(model=str(tiny), lora={"r": 4, "dropout": 0.0}, inputs=SMALL))
    for n, p in bb.model.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.05)  # the adapter-disabled reference differs from the policy
    data = _data(clips, batch_size=3)
    data.setup("fit")
    batch = bb.collator("generate")([data.datasets["train"][i] for i in range(3)])
    reward = CombinedReward([RewardSpec("vowels", vowel_share)])
    sampling = SamplingSettings(max_new_tokens=8, temperature=0.9, top_p=0.95)
    rollouts = []
    for share in (True, False):
        torch.manual_seed(11)
        scorer = GroupScorer(bb, group_size=4, sampling=sampling, share_prefix=share, reference="adapter")
        rollouts.append(collect_rollout(scorer, batch, reward, need_old_logp=True))
    shared, repeated = rollouts
    assert shared.completion_ids.shape == (12, 8) and torch.equal(shared.completion_ids, repeated.completion_ids)
    assert shared.texts == repeated.texts and torch.equal(shared.rewards.total, repeated.rewards.total)
    assert torch.equal(shared.advantages, repeated.advantages) and not shared.zero_std.all()
    assert torch.allclose(shared.old_logp, repeated.old_logp, atol=1e-5)
    assert torch.allclose(shared.ref_logp, repeated.ref_logp, atol=1e-5)
    assert not torch.allclose(shared.old_logp, shared.ref_logp, atol=1e-3)


def nan_reward(completions: Sequence[str], labels: Sequence[str]) -> list[float]:
    return [math.nan for _ in completions]


def test_non_finite_steps_are_skipped_counted_and_stop_the_run(tiny: Path, clips: Path, tmp_path: Path) -> None:
    module = _module(tiny, CombinedReward([RewardSpec("nan", nan_reward)]), max_nonfinite_skips=3)
    module.configure_model()
    before = {n: p.detach().clone() for n, p in module.model.named_parameters() if p.requires_grad}
    with pytest.raises(TrainingDivergedError, match="3 steps in a row"):
        _trainer(tmp_path, max_steps=10).fit(module, datamodule=connect(module, _data(clips)))
    assert module.nonfinite_skips == 3
    after = dict(module.model.named_parameters())
    assert all(torch.equal(before[n], after[n]) for n in before)  # nothing was applied


def test_default_rewards_with_a_verifier_folder(tiny: Path, clips: Path, tmp_path: Path) -> None:
    verifier = build_tiny_classifier(tmp_path / "verifier", resolve_label_space("dfew"))
    L.seed_everything(0)
    policy = PolicyConfig(model=str(tiny), lora={"r": 4, "dropout": 0.0}, inputs=SMALL)
    module = GRPOModule(
        policy,
        verifier=str(verifier),
        sampling=SamplingSettings(max_new_tokens=8),
        grpo={"loss_type": "dapo", "gradient_accumulation_steps": 2, "log_completions_every_n_steps": 1},
    )
    logger = L.pytorch.loggers.TensorBoardLogger(tmp_path, name="tb")
    trainer = _trainer(tmp_path, max_steps=2, logger=logger, log_every_n_steps=1)
    trainer.fit(module, datamodule=connect(module, _data(clips)))
    metrics = trainer.callback_metrics
    for key in ("train/reward/format", "train/reward/accuracy", "train/reward/explanation", "train/kl"):
        assert key in metrics and math.isfinite(float(metrics[key])), key
    assert [t.name for t in module.reward_terms] == ["format", "accuracy", "explanation"]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(Path(logger.log_dir)), size_guidance={"tensors": 0}).Reload()
    assert "completions/text_summary" in acc.Tags()["tensors"]
    assert {"train/reward", "train/frac_zero_std", "train/time/generate", "train/entropy"} <= set(acc.Tags()["scalars"])


@pytest.mark.parametrize(
    ("loss_type", "level", "entropy_coef"),
    [("grpo", "token", 0.0), ("dapo", "token", 0.0), ("grpo", "sequence", 0.0), ("dapo", "token", 0.5)],
)
def test_accumulated_micro_batches_give_the_full_batch_update(tiny, clips, tmp_path, loss_type, level, entropy_coef):
    """4 prompts in one micro-batch or in 2 accumulated ones: the same SGD step (fixed rollouts), with token
    ratios, with GSPO's sequence ratios, and with an entropy bonus (dapo: normalised by the step's tokens)."""
    kw = {"loss_type": loss_type, "importance_sampling_level": level, "entropy_coef": entropy_coef}
    full = one_step(tiny, clips, tmp_path / "full.pt", batch_size=4, **kw)
    split = one_step(tiny, clips, tmp_path / "split.pt", batch_size=2, accumulation=2, **kw)
    assert_same_update(full, split)
    if entropy_coef:  # the bonus moves the weights (its gradient flows through the chunked entropy)
        plain = one_step(tiny, clips, tmp_path / "plain.pt", batch_size=4, **{**kw, "entropy_coef": 0.0})
        assert any(not torch.allclose(full["after"][n], plain["after"][n], atol=1e-6) for n in full["after"])


def test_zero_spread_groups_filtered_with_a_trained_tower_update_as_the_kept_prompts_alone(tiny, clips, tmp_path):
    """`filter_zero_std_groups` with a trainable vision tower (each update pass re-encodes the prompts): of 2
    prompts, the first one's group has no reward spread and is dropped; the step (LoRA and tower) is exactly the
    step on the kept prompt alone. Re-encoding the whole batch would give 2·G prompts for G completions."""
    rows = [json.loads(line) for line in (clips / "manifest.jsonl").read_text().splitlines()]
    assert rows[0]["label"] != rows[1]["label"]
    (clips / "kept.jsonl").write_text(json.dumps(rows[1]) + "\n")
    common = {"train_vision": True, "filter_zero_std": True, "flat_label": rows[0]["label"], "loss_type": "grpo"}
    both = one_step(tiny, clips, tmp_path / "both.pt", batch_size=2, **common)
    kept = one_step(tiny, clips, tmp_path / "kept.pt", batch_size=1, manifest="kept.jsonl", **common)
    assert_same_update(both, kept)
    tower = [n for n in both["after"] if ".visual." in n]
    assert tower and any(not torch.equal(both["after"][n], both["before"][n]) for n in tower)  # it trained


@pytest.mark.slow
@pytest.mark.parametrize(
    ("loss_type", "level", "quantile"),
    [("grpo", "token", 1.0), ("dapo", "token", 1.0), ("grpo", "sequence", 1.0), ("grpo", "token", 0.5)],
)
def test_two_ddp_processes_give_the_one_process_update(tiny, clips, tmp_path, loss_type, level, quantile) -> None:
    """The same 4 prompts on 1 process or split over 2 gloo processes: the same SGD step (fixed rollouts), with
    GSPO's sequence ratios too, and with `top_entropy_quantile` (its quantile is taken over both ranks' tokens)."""
    kw = {"loss_type": loss_type, "importance_sampling_level": level, "top_entropy_quantile": quantile}
    full = one_step(tiny, clips, tmp_path / "full.pt", batch_size=4, **kw)
    ddp = one_step(tiny, clips, tmp_path / "ddp.pt", batch_size=2, devices=2, **kw)
    assert_same_update(full, ddp)


def test_the_same_module_trains_a_text_only_causal_lm(tmp_path: Path) -> None:
    """GRPO on `causal_lm` + TextDataModule (what benchmarks against text-only trainers use)."""
    from ecr.data import TextDataModule
    from ecr.fixtures import build_tiny_causal_lm, write_text_manifest

    lm = build_tiny_causal_lm(tmp_path / "lm", hidden_size=64)
    manifest = synthesize(tmp_path / "synth", num_clips=3, labels="dfew", seed=4, size=32, duration=0.5)
    text = write_text_manifest(manifest)
    rows = [dict(json.loads(line), split="train") for line in text.read_text().splitlines()]
    text.write_text("".join(json.dumps(r) + "\n" for r in rows))
    L.seed_everything(0)
    policy = PolicyConfig(backbone="causal_lm", model=str(lm), lora={"r": 4, "dropout": 0.0})
    module = GRPOModule(
        policy, sampling=SamplingSettings(max_new_tokens=6), rewards=[{"name": "format"}], optimization={"lr": 1e-3}
    )
    module.reward = CombinedReward([RewardSpec("vowels", vowel_share)])
    module.configure_model()
    before = {n: p.detach().clone() for n, p in module.model.named_parameters() if p.requires_grad}
    trainer = _trainer(tmp_path, max_steps=2)
    trainer.fit(module, datamodule=connect(module, TextDataModule(text, labels="dfew", val_fraction=0.0, batch_size=3)))
    assert trainer.global_step == 2 and math.isfinite(float(trainer.callback_metrics["train/kl"]))
    assert any(not torch.equal(p, before[n]) for n, p in module.model.named_parameters() if n in before)


class Completions(L.Callback):
    """Sampled texts and the logged reward of every step (what an exact resume must reproduce)."""

    def __init__(self) -> None:
        self.steps: list[tuple[list[str], float]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.steps.append((list(batch["meta"]["ids"]), float(trainer.callback_metrics["train/reward"])))


class StopAfter(L.Callback):
    def __init__(self, steps: int) -> None:
        self.steps = steps

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step >= self.steps:
            trainer.should_stop = True


def test_resume_continues_the_uninterrupted_run(tiny: Path, clips: Path, tmp_path: Path) -> None:
    """Checkpoint mid-epoch (step 3 of 2-batch epochs, shuffled): the resumed run samples the same completions
    (RNG state in the checkpoint), sees the same batches and ends with the same adapters."""

    def run(stop: int | None = None, ckpt_path: Path | None = None):
        L.seed_everything(0)
        module = _module(tiny, CombinedReward([RewardSpec("vowels", vowel_share)]), lr=1e-2)
        seen = Completions()
        callbacks: list = [seen]
        if stop is not None:
            callbacks += [
                StopAfter(stop),
                L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "ck", filename="{step}", every_n_train_steps=1,
                                                    save_top_k=-1),
            ]  # fmt: skip
        trainer = _trainer(tmp_path, max_steps=5, callbacks=callbacks, enable_checkpointing=stop is not None)
        data = _data(clips)
        trainer.fit(module, datamodule=connect(module, data), ckpt_path=ckpt_path)
        return module, seen.steps

    full, full_steps = run()
    assert len(full_steps) == 5
    run(stop=3)
    ckpt = tmp_path / "ck" / "step=3.ckpt"
    assert "torch" in torch.load(ckpt, map_location="cpu", weights_only=True)["ecr_rng"]
    resumed, resumed_steps = run(ckpt_path=ckpt)
    assert [ids for ids, _ in resumed_steps] == [ids for ids, _ in full_steps[3:]]
    assert [r for _, r in resumed_steps] == pytest.approx([r for _, r in full_steps[3:]], abs=1e-6)
    for name in full.checkpoint_keys():
        assert torch.allclose(full.get_parameter(name), resumed.get_parameter(name), atol=1e-6), name


def _off_policy_fit(tiny: Path, clips: Path, tmp: Path, sampling: dict, **grpo) -> tuple[dict, dict]:
    """(the trained tensors after 2 seeded steps at lr 1e-2, the last logged metrics)."""
    L.seed_everything(0)
    policy = PolicyConfig(model=str(tiny), lora={"r": 8, "alpha": 16, "dropout": 0.0}, inputs=SMALL)
    module = GRPOModule(policy, sampling=SamplingSettings(max_new_tokens=6, **sampling),
                        grpo={"log_completions_every_n_steps": 0, **grpo}, optimization={"lr": 1e-2})  # fmt: skip
    module.reward = CombinedReward([RewardSpec("vowels", vowel_share)])
    trainer = _trainer(tmp, max_steps=2)
    trainer.fit(module, datamodule=connect(module, _data(clips)))
    weights = {n: module.get_parameter(n).detach().clone() for n in module.checkpoint_keys()}
    return weights, dict(trainer.callback_metrics)


def test_top_k_sampling_is_corrected_off_policy_and_logged(tiny: Path, clips: Path, tmp_path: Path) -> None:
    """With top_k on the rollout carries the sampler's log-probs and "auto" weights the policy term by the
    token_truncate correction: train/off_policy/* are logged (π_old / q <= 1 on every kept token, so C_max = 3
    never acts) and the update is not the uncorrected one, which warns."""
    corrected, metrics = _off_policy_fit(tiny, clips, tmp_path / "auto", {"top_k": 5})
    print({k: f"{float(v):.3g}" for k, v in metrics.items() if k.startswith("train/off_policy/")})
    for name in ("mean", "min", "max", "masked_fraction", "mean_abs_logp_diff"):
        assert f"train/off_policy/{name}" in metrics and math.isfinite(float(metrics[f"train/off_policy/{name}"]))
    assert 0 < float(metrics["train/off_policy/min"]) <= float(metrics["train/off_policy/max"]) <= 1
    assert float(metrics["train/off_policy/masked_fraction"]) == 0 and float(metrics["train/off_policy/mean"]) < 1
    assert float(metrics["train/off_policy/mean_abs_logp_diff"]) > 0  # top-5 of ~1,000 ids: q is far from π
    with pytest.warns(UserWarning, match="off_policy_correction is none: biased gradient"):
        uncorrected, metrics = _off_policy_fit(
            tiny, clips, tmp_path / "none", {"top_k": 5}, off_policy_correction="none"
        )
    assert not any(k.startswith("train/off_policy/") for k in metrics)
    assert any(not torch.allclose(corrected[n], uncorrected[n], atol=1e-6) for n in corrected)


def test_off_policy_auto_without_filters_leaves_the_update_bit_identical_to_none(
    tiny: Path, clips: Path, tmp_path: Path
) -> None:
    """No filter: π's own samples, no sampler log-probs, so "auto" applies nothing (and logs nothing)."""
    auto, metrics = _off_policy_fit(tiny, clips, tmp_path / "auto", {})
    none, _ = _off_policy_fit(tiny, clips, tmp_path / "none", {}, off_policy_correction="none")
    assert not any(k.startswith("train/off_policy/") for k in metrics)
    assert all(torch.equal(auto[n], none[n]) for n in auto)
    start, _ = _off_policy_fit(tiny, clips, tmp_path / "still", {}, off_policy_correction="none", beta=0.0)
    assert any(not torch.equal(auto[n], start[n]) for n in auto)  # the runs did train (β = 0 moves differently)


# ------------------------------------------------------------------------------ from an SFT start (real rewards)
class TermHistory(L.Callback):
    """The logged mean of the total reward and of each reward term at every step."""

    def __init__(self, terms: Sequence[str]) -> None:
        self.keys = ["train/reward", *[f"train/reward/{t}" for t in terms]]
        self.rows: list[dict[str, float]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.rows.append({k: float(trainer.callback_metrics[k]) for k in self.keys})

    def window(self, key: str, start: int, stop: int) -> float:
        values = [r[key] for r in self.rows[start:stop]]
        return sum(values) / len(values)


@pytest.fixture(scope="module")
def sft_policies(tiny: Path, clips: Path, tmp_path_factory) -> dict[int, Path]:
    """The tiny policy after 40 and 60 SFT steps (full fine-tune, constant lr) on the 4 clips with one-sentence
    explanations, saved as model folders. At T = 1 the 40-step policy writes the format about a quarter of the
    time, the 60-step one nearly always, but its answers are near chance (about 1 in 4 right)."""
    from ecr.modules.sft import SFTModule

    rows = [json.loads(line) for line in (clips / "manifest.jsonl").read_text().splitlines()]
    short = [dict(r, explanation=r["explanation"].rsplit(". ", 1)[-1]) for r in rows]
    (clips / "short.jsonl").write_text("".join(json.dumps(r) + "\n" for r in short))
    out = tmp_path_factory.mktemp("sft")
    saved: dict[int, Path] = {}

    class SaveAt(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if trainer.global_step in (40, 60):
                saved[trainer.global_step] = pl_module.backbone.save_pretrained(out / f"step{trainer.global_step}")

    L.seed_everything(0)
    policy = PolicyConfig(model=str(tiny), lora={"enabled": False}, inputs=SMALL)
    module = SFTModule(policy, optimization={"lr": 7e-3, "warmup_ratio": 0.0, "scheduler": "constant_with_warmup"})
    data = _data(clips, manifest="short.jsonl")
    _trainer(out, max_steps=60, callbacks=[SaveAt()]).fit(module, datamodule=connect(module, data))
    return saved


def _grpo_from(policy_dir: Path, clips: Path, tmp: Path, terms: list[str], steps: int, verifier: Path | None):
    """GRPO on all 4 clips per step (G = 8, LoRA, β = 0.04, the real reward terms): the per-term history."""
    L.seed_everything(0)
    policy = PolicyConfig(model=str(policy_dir), lora={"r": 8, "alpha": 16, "dropout": 0.0}, inputs=SMALL)
    module = GRPOModule(
        policy, verifier=str(verifier) if verifier else None, rewards=[{"name": t} for t in terms],
        sampling=SamplingSettings(max_new_tokens=32, temperature=1.0), optimization={"lr": 5e-3},
        grpo={"num_generations": 8, "beta": 0.04, "log_completions_every_n_steps": 0},
    )  # fmt: skip
    history = TermHistory(terms)
    data = _data(clips, batch_size=4, manifest="short.jsonl")
    _trainer(tmp, max_steps=steps, callbacks=[history]).fit(module, datamodule=connect(module, data))
    return history


@pytest.mark.slow
def test_grpo_raises_the_real_reward_of_an_sft_policy(sft_policies, clips: Path, tmp_path: Path) -> None:
    """Format + accuracy + explanation (a tiny random verifier folder) from the 60-step SFT policy, 60 steps.

    Each step's mean is over 32 completions whose total reward has a standard deviation of about 0.6, so a step
    mean is noisy by about 0.11 and the difference of two 20-step windows by about 0.035. Measured (seed 0): the
    first 20 steps average 1.44 and the last 20 steps 1.56 (continued to 120 steps it reaches 1.69, every term
    rising). The margin, 0.05, is about 1.5 noise units, well below the measured rise of 0.12.
    """
    verifier = build_tiny_classifier(tmp_path / "verifier", resolve_label_space("dfew"))
    history = _grpo_from(sft_policies[60], clips, tmp_path, ["format", "accuracy", "explanation"], 60, verifier)
    first, last = history.window("train/reward", 0, 20), history.window("train/reward", 40, 60)
    assert last > first + 0.05, [round(r["train/reward"], 3) for r in history.rows]
    task_first = history.window("train/reward/format", 0, 20) + history.window("train/reward/accuracy", 0, 20)
    task_last = history.window("train/reward/format", 40, 60) + history.window("train/reward/accuracy", 40, 60)
    assert task_last > task_first, (task_first, task_last)  # not only the (random) verifier's term


@pytest.mark.slow
def test_the_format_reward_alone_teaches_the_format(sft_policies, clips: Path, tmp_path: Path) -> None:
    """The binary format reward on its own, from the 40-step SFT policy that writes the format ~20 % of the time.

    (From a random policy it cannot work: see docs/method.md §4.) With p ≈ 0.2 most groups of 8 hold both
    outcomes, so the loop has a signal; a step mean of the format reward is noisy by about 0.07 and a 15-step
    window by about 0.02. Measured (seed 0): 0.19 in the first 15 steps, 0.50 in the last 15 (0.6 at the end).
    """
    history = _grpo_from(sft_policies[40], clips, tmp_path, ["format"], 60, None)
    first, last = history.window("train/reward", 0, 15), history.window("train/reward", 45, 60)
    assert first < 0.35 and last > first + 0.15, [round(r["train/reward"], 2) for r in history.rows]
