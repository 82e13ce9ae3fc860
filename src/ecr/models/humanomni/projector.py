"""HumanOmni's visual and audio projectors (docs/humanomni.md; the maths of the reference spec §3).

`AllInOne` (7B) and `AllInOneSmall` (0.5B) map SigLIP patch features of T frames to LLM tokens along three
branches with their own weights: `video` and `body` (RegStage → Conv3d temporal sampler → RegStage → MLP
readout, T·s'² tokens each) and `face` (a token-wise MLP whose output is later pooled 2× by `face_pool`).
Attribute names are the released checkpoints' (`s1_video.b1.conv1.conv.weight`, `sampler_body.0.bias`, …).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ecr.errors import ConfigError
from ecr.extras import require

# (RegStage depth, Conv3d padding) per projector type: the only two differences between the two projectors.
PROJECTOR_GEOMETRY = {"all_in_one_small": (2, (1, 0, 0)), "all_in_one": (4, (1, 1, 1))}


def mlp2x_gelu(in_features: int, out_features: int) -> nn.Sequential:
    """Linear → exact GELU → Linear (keys `.0.*` and `.2.*`)."""
    return nn.Sequential(nn.Linear(in_features, out_features), nn.GELU(), nn.Linear(out_features, out_features))


def reg_stage(depth: int, in_chs: int, out_chs: int) -> nn.Module:
    """timm's RegNet stage as HumanOmni builds it: depthwise bottlenecks, SE, SiLU, channel LayerNorm."""
    layer_norm_2d = require("timm.layers", "the HumanOmni projectors (timm's RegNet stage)").LayerNorm2d
    reg_stage_cls = require("timm.models.regnet", "the HumanOmni projectors (timm's RegNet stage)").RegStage
    return reg_stage_cls(depth, in_chs, out_chs, stride=1, dilation=1, act_layer=nn.SiLU, norm_layer=layer_norm_2d)


def sampled_side(side: int, spatial_padding: int) -> int:
    """Grid side after the stride-2, kernel-2 Conv3d sampler: ⌊(s + 2p − 2)/2⌋ + 1."""
    return (side + 2 * spatial_padding - 2) // 2 + 1


class AllInOne(nn.Module):
    """The three-branch projector (video, body, face). `projector_type` picks depth and padding."""

    def __init__(self, mm_hidden_size: int, hidden_size: int, projector_type: str = "all_in_one") -> None:
        super().__init__()
        if projector_type not in PROJECTOR_GEOMETRY:
            raise ConfigError(
                f"config.json: mm_projector_type {projector_type!r} is not supported; expected one of "
                f"{sorted(PROJECTOR_GEOMETRY)}"
            )
        depth, padding = PROJECTOR_GEOMETRY[projector_type]
        self.spatial_padding = padding[1]
        c, h = mm_hidden_size, hidden_size
        for branch in ("video", "body"):
            setattr(self, f"s1_{branch}", reg_stage(depth, c, h))
            sampler = nn.Sequential(nn.Conv3d(h, h, (2, 2, 2), stride=(1, 2, 2), padding=padding), nn.SiLU())
            setattr(self, f"sampler_{branch}", sampler)
            setattr(self, f"s2_{branch}", reg_stage(depth, h, h))
            setattr(self, f"readout_{branch}", mlp2x_gelu(h, h))
        self.mlp_2xgelu_face = mlp2x_gelu(c, h)

    def branch(self, features: torch.Tensor, name: str) -> torch.Tensor:
        """One spatio-temporal branch. features [B, T, N, C] (N = s², row-major) → [B, T·s'², H]."""
        b, t, n, c = features.shape
        s = math.isqrt(n)
        if s * s != n:
            raise ValueError(f"{n} patch tokens per frame do not form a square grid")
        x = features.reshape(b * t, s, s, c).permute(0, 3, 1, 2)  # [B·T, C, s, s]
        x = getattr(self, f"s1_{name}")(x)  # [B·T, H, s, s]
        hid = x.shape[1]
        x = x.reshape(b, t, hid, s, s).permute(0, 2, 1, 3, 4)  # [B, H, T, s, s]
        x = getattr(self, f"sampler_{name}")(x)[:, :, :t]  # [B, H, T+1, s', s'] → drop the last step → T
        s2 = x.shape[-1]
        x = x.permute(0, 2, 1, 3, 4).reshape(b * t, hid, s2, s2)  # [B·T, H, s', s']
        x = getattr(self, f"s2_{name}")(x)  # [B·T, H, s', s']
        x = x.reshape(b, t, hid, s2 * s2).permute(0, 1, 3, 2).reshape(b, t * s2 * s2, hid)  # (t, row, col)
        return getattr(self, f"readout_{name}")(x)

    def forward(
        self, video: torch.Tensor, body: torch.Tensor, face: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """video, body [B, T, N, C]; face [B·T, N, C] → ([B, T·s'², H], [B, T·s'², H], [B·T, N, H])."""
        return self.branch(video, "video"), self.branch(body, "body"), self.mlp_2xgelu_face(face)


class AllInOneSmall(AllInOne):
    """The 0.5B projector: depth-2 RegStages and no spatial padding in the sampler."""

    def __init__(self, mm_hidden_size: int, hidden_size: int) -> None:
        super().__init__(mm_hidden_size, hidden_size, "all_in_one_small")


def build_vision_projector(projector_type: str, mm_hidden_size: int, hidden_size: int) -> AllInOne:
    if projector_type == "all_in_one_small":
        return AllInOneSmall(mm_hidden_size, hidden_size)
    return AllInOne(mm_hidden_size, hidden_size, projector_type)


def build_audio_projector(projector_type: str | None, audio_hidden_size: int, hidden_size: int) -> nn.Module:
    """The audio projector; `mm_audio_projector_type` is required (the official fallback to the vision
    projector type would build the wrong module)."""
    if projector_type is None:
        raise ConfigError("config.json: mm_audio_projector_type is missing (expected e.g. 'mlp2x_gelu')")
    if projector_type == "linear":
        return nn.Linear(audio_hidden_size, hidden_size)
    if projector_type == "identity":
        return nn.Identity()
    if projector_type.startswith("mlp") and projector_type.endswith("x_gelu"):
        depth = int(projector_type[3:-6]) if projector_type[3:-6].isdigit() else 0
        if depth >= 1:
            layers: list[nn.Module] = [nn.Linear(audio_hidden_size, hidden_size)]
            for _ in range(depth - 1):
                layers += [nn.GELU(), nn.Linear(hidden_size, hidden_size)]
            return nn.Sequential(*layers)
    raise ConfigError(
        f"config.json: mm_audio_projector_type {projector_type!r} is not supported; expected linear, identity or "
        "mlp{N}x_gelu"
    )


def face_pool(face: torch.Tensor) -> torch.Tensor:
    """Bilinear 2× down-sampling of each frame's face tokens (not an average pool: 27 → 14 is a true resample).

    face [T, s², H] → [T·⌈s/2⌉², H] in (t, row, col) order.
    """
    t, n, h = face.shape
    s = math.isqrt(n)
    x = face.reshape(t, s, s, h).permute(0, 3, 1, 2)  # [T, H, s, s]
    side = math.ceil(s / 2)
    x = F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)  # [T, H, s/2, s/2]
    return x.permute(0, 2, 3, 1).reshape(t * side * side, h)


def route_mix(probs: torch.Tensor, video: torch.Tensor, body: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
    """The router's mixture X_b = p_b0·video_b + p_b1·body_b + p_b2·face_b.

    probs [B, 3] (order video, body, face); video, body, face [B, K, H] → [B, K, H].
    """
    p = probs.to(video.dtype)[:, :, None, None]  # [B, 3, 1, 1]
    return p[:, 0] * video + p[:, 1] * body + p[:, 2] * face


def slow_fast_compress(tokens: torch.Tensor, num_frames: int) -> torch.Tensor:
    """HumanOmni-7B's optional slow-fast token compressor (the original HumanOmni code only; R1-Omni and ERV
    do not use it, so it is off unless `slow_fast_compressor: true` is in the config).

    tokens [B, T·n, H] (T = num_frames, n = side² tokens per frame, time-major) → [B, T·⌊side/2⌋² + S·n, H]:
    fast = every frame average-pooled 2×2 on its side×side grid; slow = the full-resolution tokens of frames
    1, 5, 9, … (frame 0 when T = 1), appended after the fast tokens.
    """
    b, k, h = tokens.shape
    if k % num_frames:
        raise ConfigError(f"slow-fast compressor: {k} visual tokens are not {num_frames} frames of equal size")
    n = k // num_frames
    side = math.isqrt(n)
    if side * side != n:
        raise ConfigError(f"slow-fast compressor: {n} tokens per frame is not a square grid")
    frames = tokens.reshape(b * num_frames, side, side, h).permute(0, 3, 1, 2)  # [B·T, H, side, side]
    fast = F.avg_pool2d(frames, 2, 2).permute(0, 2, 3, 1).reshape(b, -1, h)  # [B, T·⌊side/2⌋², H]
    slow_idx = torch.arange(1, num_frames, 4, device=tokens.device)
    if slow_idx.numel() == 0:
        slow_idx = torch.zeros(1, dtype=torch.long, device=tokens.device)
    slow = tokens.reshape(b, num_frames, n, h)[:, slow_idx].reshape(b, -1, h)  # [B, S·n, H]
    return torch.cat([fast, slow], dim=1)
