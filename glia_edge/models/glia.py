"""GLIA: a frozen ViT adapted for blind IQA by global-local interaction adapters.

After "Unleashing Vision Transformer Potential in IQA via Global-Local Adaptive Interaction"
(ICASSP 2026; only its abstract is public, so where it is silent these are this project's
choices, each a config switch) and its closest published relative LoDa (Xu et al., CVPR 2024):

- global stream: a frozen timm ViT;
- local stream: a light trainable conv pyramid (strides 4, 8, 16) pooled to the ViT's patch grid
  as tokens of width r, or (``local_stream="resnet50"``) LoDa's local stream: a frozen timm
  ResNet-50 fed ImageNet-normalised pixels, its BatchNorm layers in training mode while the model
  trains (as LoDa's, their running statistics follow the IQA data and are saved), and per stage
  LoDa's extractor (1x1 conv, GELU, 3x3 conv, average pooling to 7x7), the four stages' 49
  tokens concatenated into 196 local tokens;
- an ``InteractionAdapter`` before every k-th ViT block: local->global and global->local
  cross-attention in width r, a depthwise 3x3 refinement of the local tokens on their grid(s),
  an input-dependent per-channel gate fusing the two directions, and an up-projection scaled by a
  learnable per-channel factor started near 0;
- head: final norm, CLS + mean patch token + mean local token, a small MLP to one score;
  ``score_head="sigmoid"`` bounds it to the label range (``min + (max - min) * sigmoid``), so no
  input can score outside the range a model declares (the default model's head).

``glia_vit_base_resnet50`` is GLIA with LoDa's local stream, not LoDa: its adapters and head are
GLIA's (LoDa projects down and up with two-layer MLPs, cross-attends from the ViT tokens only,
keeps its local tokens fixed, and regresses from the CLS token with a cosine-normalised linear
layer), and its ViT keeps the normalisation its own weights expect (LoDa feeds the ViT the
ImageNet mean/std too).

The input is float RGB in [0, 1], NCHW: input normalisation and the score's affine map back to
the training MOS scale are buffers inside the graph, so exported models need neither.
The adapters' attention is ``scaled_dot_product_attention`` (OpenVINO's PyTorch frontend makes it
its ScaledDotProductAttention op); ONNX export gets plain MatMul/Softmax, which every exporter and
TensorRT 10.3 parse.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from glia_edge.models.backbone import create_timm, freeze
from glia_edge.models.registry import register_model


@dataclass
class GliaConfig:
    """Every architecture switch of GLIA; saved in checkpoints and artifact metadata."""

    name: str = "glia_vit_tiny"
    backbone: str = "vit_tiny_patch16_224"
    #: The timm pretrained tag this preset is meant to be trained from (``backbone_weights="pretrained"``).
    backbone_pretrained: str = "vit_tiny_patch16_224.augreg_in21k_ft_in1k"
    depth: int | None = None  # override the backbone depth (tiny test models)
    img_size: int = 224
    local_stream: str = "conv"  # "conv" (trainable pyramid) or "resnet50" (frozen timm CNN, LoDa)
    local_channels: tuple[int, ...] = (32, 48, 96, 128)
    local_pretrained: str = "resnet50.a1_in1k"
    local_arch: str = "resnet50"  # the timm CNN of the "resnet50" stream (tests use smaller ones)
    local_grid: int = 7  # LoDa's pooling of each CNN stage to local_grid x local_grid tokens
    local_bn: str = "train"  # "train": BatchNorm as LoDa (batch statistics while training); "frozen": eval mode
    adapter_dim: int = 64
    adapter_heads: int = 4
    adapter_every: int = 1
    init_scale: float = 1e-2
    head_hidden: int = 256
    head_dropout: float = 0.1
    #: "linear": the head's output is the standardised score (unbounded; every model made before
    #: this switch). "sigmoid": the score is ``min + (max - min) * sigmoid(head)``, bounded to the range.
    score_head: str = "linear"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first option that cannot build a model, so a bad value is
        refused before any data is prepared instead of failing deep inside the build."""
        import math

        import timm

        def positive(key: str) -> tuple[bool, str]:
            return getattr(self, key) >= 1, "must be >= 1"

        channels = tuple(self.local_channels)
        checks: list[tuple[str, bool, str]] = [
            ("backbone", timm.is_model(self.backbone), "not a timm model name"),
            ("depth", self.depth is None or self.depth >= 1, "give at least 1 block (or leave it unset)"),
            ("img_size", *positive("img_size")),
            ("local_stream", self.local_stream in ("conv", "resnet50"), "must be 'conv' or 'resnet50'"),
            ("local_channels", len(channels) == 4 and all(c >= 1 for c in channels),
             "needs 4 widths >= 1 (one per conv stage)"),
            ("local_arch", self.local_stream != "resnet50" or timm.is_model(self.local_arch),
             "not a timm model name"),
            ("local_grid", *positive("local_grid")),
            ("local_bn", self.local_bn in ("train", "frozen"), "must be 'train' or 'frozen'"),
            ("adapter_dim", *positive("adapter_dim")),
            ("adapter_heads", *positive("adapter_heads")),
            ("adapter_heads", self.adapter_dim % max(1, self.adapter_heads) == 0,
             f"must divide adapter_dim {self.adapter_dim}"),
            ("adapter_every", *positive("adapter_every")),
            ("init_scale", math.isfinite(self.init_scale), "must be a finite number"),
            ("head_hidden", *positive("head_hidden")),
            ("head_dropout", 0.0 <= self.head_dropout < 1.0, "must be in [0, 1)"),
            ("score_head", self.score_head in ("linear", "sigmoid"), "must be 'linear' or 'sigmoid'"),
        ]
        for key, ok, reason in checks:
            if not ok:
                raise ValueError(f"model option {key}={getattr(self, key)!r}: {reason}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "GliaConfig":
        known = {f.name for f in fields(cls)}
        cfg = {k: v for k, v in data.items() if k in known}
        if "local_channels" in cfg:
            cfg["local_channels"] = tuple(cfg["local_channels"])
        return cls(**cfg)


def _to_grid(feat: torch.Tensor, grid: int) -> torch.Tensor:
    """Resample a feature map to grid x grid: average pooling when it divides, else bilinear."""
    size = feat.shape[-1]
    if size == grid:
        return feat
    if size > grid and size % grid == 0:
        return F.avg_pool2d(feat, size // grid)
    return F.interpolate(feat, size=(grid, grid), mode="bilinear", align_corners=False)


class ConvLocalStream(nn.Module):
    """Trainable conv pyramid on the pixels; stages at strides 4, 8, 16 become tokens of width r."""

    def __init__(self, channels: tuple[int, ...], dim: int, grid: int) -> None:
        super().__init__()
        c0, c1, c2, c3 = channels

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

        self.stem = nn.Sequential(block(3, c0), block(c0, c1))  # stride 4
        self.stage8 = block(c1, c2)
        self.stage16 = block(c2, c3)
        self.proj = nn.ModuleList(nn.Conv2d(c, dim, 1) for c in (c1, c2, c3))
        self.norm = nn.LayerNorm(dim)
        self.grid = grid
        self.layout = (1, grid)  # (maps, side) of the local tokens: one map on the patch grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f4 = self.stem(x)
        f8 = self.stage8(f4)
        f16 = self.stage16(f8)
        fused = sum(_to_grid(p(f), self.grid) for p, f in zip(self.proj, (f4, f8, f16)))
        return self.norm(fused.flatten(2).transpose(1, 2))


#: The ImageNet mean/std LoDa normalises its input with (and ResNet-50's timm weights expect).
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class ResNetLocalStream(nn.Module):
    """LoDa's local stream on pixels in [0, 1]: ImageNet normalisation, a frozen timm CNN's four
    stages, and per stage a 1x1 conv, GELU, a 3x3 conv and average pooling to ``grid`` x ``grid``;
    the stages' tokens are concatenated, (B, 4 * grid * grid, dim)."""

    def __init__(self, arch: str, weights: str | None, dim: int, grid: int) -> None:
        super().__init__()
        self.cnn = freeze(create_timm(arch, weights, "local-stream CNN", features_only=True, out_indices=(1, 2, 3, 4)))
        self.extract = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, dim, 1), nn.GELU(), nn.Conv2d(dim, dim, 3, padding=1, bias=False),
                          nn.AdaptiveAvgPool2d(grid))
            for c in self.cnn.feature_info.channels())
        self.register_buffer("input_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("input_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.layout = (len(self.extract), grid)  # (maps, side) of the local tokens

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.cnn((x - self.input_mean) / self.input_std)
        return torch.cat([e(f).flatten(2).transpose(1, 2) for e, f in zip(self.extract, feats)], dim=1)


class CrossAttention(nn.Module):
    """Multi-head cross-attention with pre-norms (SDPA; MatMul + Softmax in ONNX export)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"adapter_dim {dim} is not divisible by adapter_heads {heads}")
        self.heads, self.head_dim = heads, dim // heads
        self.scale = self.head_dim ** -0.5
        self.norm_q, self.norm_kv = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        m = ctx.shape[1]
        q = self.q(self.norm_q(x)).reshape(b, n, self.heads, self.head_dim).transpose(1, 2)
        k, v = self.kv(self.norm_kv(ctx)).reshape(b, m, 2, self.heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        if torch.onnx.is_in_onnx_export():
            # The legacy exporter (opset 17) decomposes SDPA with two extra Muls and Reshapes: give
            # it the plain MatMul -> Softmax -> MatMul form, which TensorRT 10.3 also parses.
            out = torch.softmax((q * self.scale) @ k.transpose(-2, -1), dim=-1) @ v
        else:
            # One op: PyTorch's fused kernel, and OpenVINO's PyTorch frontend converts it to its
            # ScaledDotProductAttention (tests/test_adapter_attention.py counts them).
            out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class InteractionAdapter(nn.Module):
    """Global-local interaction before one ViT block; returns updated ViT tokens and local tokens."""

    def __init__(self, dim: int, r: int, heads: int, grid: int, num_prefix: int, init_scale: float,
                 local_layout: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.down = nn.Linear(dim, r)
        self.local_to_global = CrossAttention(r, heads)
        self.global_to_local = CrossAttention(r, heads)
        self.local_conv = nn.Conv2d(r, r, 3, padding=1, groups=r)
        self.gate = nn.Linear(2 * r, r)
        self.up = nn.Linear(r, dim)
        self.scale = nn.Parameter(torch.full((dim,), init_scale))
        self.grid, self.num_prefix = grid, num_prefix
        #: The local tokens as ``maps`` square maps of ``side`` x ``side`` (conv stream: one map on the patch grid).
        self.local_layout = local_layout or (1, grid)

    def _on_patch_grid(self, local: torch.Tensor) -> torch.Tensor:
        """Local tokens as one token per ViT patch: the maps' mean, resized (nearest) to the patch grid."""
        maps, side = self.local_layout
        if maps == 1 and side == self.grid:
            return local
        b, _, r = local.shape
        mean_map = local.reshape(b, maps, side * side, r).mean(dim=1).transpose(1, 2).reshape(b, r, side, side)
        return F.interpolate(mean_map, size=(self.grid, self.grid), mode="nearest").flatten(2).transpose(1, 2)

    def forward(self, tokens: torch.Tensor, local: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        g = self.down(self.norm(tokens))
        g_from_local = self.local_to_global(g, local)
        local = local + self.global_to_local(local, g)
        b, n, r = local.shape
        maps, side = self.local_layout
        grids = local.reshape(b, maps, side * side, r).permute(0, 1, 3, 2).reshape(b * maps, r, side, side)
        refined = self.local_conv(grids).reshape(b, maps, r, side * side).permute(0, 1, 3, 2).reshape(b, n, r)
        local = local + refined
        # One local token per patch token; prefix (CLS) tokens take their mean.
        local_mean = local.mean(dim=1, keepdim=True)
        local_on_tokens = torch.cat([local_mean.expand(-1, self.num_prefix, -1), self._on_patch_grid(local)], dim=1)
        gate = torch.sigmoid(self.gate(torch.cat([g_from_local.mean(dim=1), local_mean[:, 0]], dim=-1)))
        gate = gate.unsqueeze(1)
        fused = gate * g_from_local + (1.0 - gate) * local_on_tokens
        return tokens + self.up(fused) * self.scale, local


class GLIA(nn.Module):
    """Frozen ViT + local stream + interaction adapters + MLP head -> one quality score per crop."""

    def __init__(self, cfg: GliaConfig, backbone_weights: str | None = None, local_weights: str | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        weights = cfg.backbone_pretrained if backbone_weights == "pretrained" else backbone_weights
        if cfg.depth is not None and cfg.depth < 1:  # 0 would silently build the full-depth ViT
            raise ValueError(f"depth must be >= 1 (or None for the backbone's own), got {cfg.depth}")
        extra = {"depth": cfg.depth} if cfg.depth else {}
        self.vit = freeze(create_timm(cfg.backbone, weights, "ViT backbone", img_size=cfg.img_size, num_classes=0, **extra))
        dim = self.vit.embed_dim
        patch = self.vit.patch_embed.patch_size[0]
        grid = cfg.img_size // patch
        prefix = self.vit.num_prefix_tokens
        r = cfg.adapter_dim
        if cfg.local_stream == "conv":
            self.local = ConvLocalStream(cfg.local_channels, r, grid)
        elif cfg.local_stream == "resnet50":
            if cfg.local_bn not in ("train", "frozen"):
                raise ValueError(f"local_bn must be 'train' (LoDa) or 'frozen', got {cfg.local_bn!r}")
            lw = cfg.local_pretrained if local_weights == "pretrained" else local_weights
            self.local = ResNetLocalStream(cfg.local_arch, lw, r, cfg.local_grid)
        else:
            raise ValueError(f"local_stream must be 'conv' or 'resnet50', got {cfg.local_stream!r}")
        depth = len(self.vit.blocks)
        self.adapter_blocks = [i for i in range(depth) if i % cfg.adapter_every == 0]
        self.adapters = nn.ModuleList(
            InteractionAdapter(dim, r, cfg.adapter_heads, grid, prefix, cfg.init_scale, self.local.layout)
            for _ in self.adapter_blocks)
        feat = dim * (2 if prefix else 1) + r
        self.head = nn.Sequential(nn.LayerNorm(feat), nn.Linear(feat, cfg.head_hidden), nn.GELU(),
                                  nn.Dropout(cfg.head_dropout), nn.Linear(cfg.head_hidden, 1))
        self.register_buffer("pixel_mean", torch.tensor(self.vit.pretrained_cfg.get("mean", (0.485, 0.456, 0.406))).view(1, 3, 1, 1))
        self.register_buffer("pixel_std", torch.tensor(self.vit.pretrained_cfg.get("std", (0.229, 0.224, 0.225))).view(1, 3, 1, 1))
        # The head predicts standardised scores; these map them back to the training MOS scale.
        self.register_buffer("score_mean", torch.zeros(()))
        self.register_buffer("score_std", torch.ones(()))
        if cfg.score_head not in ("linear", "sigmoid"):
            raise ValueError(f"score_head must be 'linear' or 'sigmoid', got {cfg.score_head!r}")
        if cfg.score_head == "sigmoid":  # the bounds live in the graph, like the affine map
            self.register_buffer("score_min", torch.zeros(()))
            self.register_buffer("score_max", torch.full((), 100.0))

    def set_score_scale(self, mean: float, std: float, lo: float | None = None, hi: float | None = None) -> None:
        """The training labels' mean/std (and, for a sigmoid head, the range ``lo``..``hi`` it is bounded to)."""
        self.score_mean.fill_(float(mean))
        self.score_std.fill_(float(std))
        if self.cfg.score_head == "sigmoid":
            if lo is None or hi is None or not hi > lo:
                raise ValueError(f"a sigmoid score head needs a range lo < hi, got {lo}..{hi}")
            self.score_min.fill_(float(lo))
            self.score_max.fill_(float(hi))

    def train(self, mode: bool = True) -> "GLIA":
        super().train(mode)
        self.vit.eval()  # frozen: dropout/BN-free anyway, but keep it deterministic
        if isinstance(self.local, ResNetLocalStream) and self.cfg.local_bn != "train":
            self.local.cnn.eval()  # "frozen": running statistics as loaded; LoDa's "train" leaves BN training
        return self

    def forward_standardised(self, x: torch.Tensor) -> torch.Tensor:
        """Score in training units (standardised), shape (B,)."""
        out = self.head_output(x)
        if self.cfg.score_head == "sigmoid":
            return (self._bounded(out) - self.score_mean) / self.score_std
        return out

    def _bounded(self, logit: torch.Tensor) -> torch.Tensor:
        return self.score_min + (self.score_max - self.score_min) * torch.sigmoid(logit)

    def head_output(self, x: torch.Tensor) -> torch.Tensor:
        """The head's raw output, (B,): the standardised score (linear head) or the logit (sigmoid head)."""
        raw = x
        x = (x - self.pixel_mean) / self.pixel_std
        # LoDa's ResNet stream normalises its own input (ImageNet mean/std); the conv pyramid takes the ViT's.
        local = self.local(raw if isinstance(self.local, ResNetLocalStream) else x)
        vit = self.vit
        tokens = vit.norm_pre(vit.patch_drop(vit._pos_embed(vit.patch_embed(x))))
        adapters = iter(self.adapters)
        for i, block in enumerate(vit.blocks):
            if i in self.adapter_blocks:
                tokens, local = next(adapters)(tokens, local)
            tokens = block(tokens)
        tokens = vit.norm(tokens)
        prefix = vit.num_prefix_tokens
        pooled = [tokens[:, 0]] if prefix else []
        pooled += [tokens[:, prefix:].mean(dim=1), local.mean(dim=1)]
        return self.head(torch.cat(pooled, dim=-1)).squeeze(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Float RGB crops in [0, 1], (B, 3, S, S) -> scores on the training scale, (B,)."""
        if self.cfg.score_head == "sigmoid":
            return self._bounded(self.head_output(x))
        return self.head_output(x) * self.score_std + self.score_mean

    def param_counts(self) -> dict[str, int]:
        """Trainable and total parameter counts."""
        total = sum(p.numel() for p in self.parameters())
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return {"trainable": trainable, "total": total, "frozen": total - trainable}

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Trainable parameters plus every non-backbone buffer (BN statistics, score scale)."""
        frozen = {n for n, p in self.named_parameters() if not p.requires_grad}
        frozen |= {n for n, _ in self.vit.named_buffers(prefix="vit")}
        if isinstance(self.local, ResNetLocalStream) and self.cfg.local_bn != "train":
            frozen |= {n for n, _ in self.local.cnn.named_buffers(prefix="local.cnn")}  # unchanged by training
        return {k: v for k, v in self.state_dict().items() if k not in frozen}


def _build(cfg: GliaConfig, backbone_weights: str | None, overrides: dict[str, Any]) -> GLIA:
    local_weights = overrides.pop("local_weights", None)
    unknown = set(overrides) - {f.name for f in fields(GliaConfig)}
    if unknown:
        raise TypeError(f"unknown GLIA options: {sorted(unknown)}")
    for key, value in overrides.items():
        setattr(cfg, key, tuple(value) if key == "local_channels" else value)
    return GLIA(cfg, backbone_weights=backbone_weights, local_weights=local_weights)


_VIT = {
    "tiny": ("vit_tiny_patch16_224", "vit_tiny_patch16_224.augreg_in21k_ft_in1k"),
    "small": ("vit_small_patch16_224", "vit_small_patch16_224.augreg_in21k_ft_in1k"),
    "base": ("vit_base_patch16_224", "vit_base_patch16_224.augreg2_in21k_ft_in1k"),
}


def _preset(name: str, size: str, **kwargs: Any) -> GliaConfig:
    arch, tag = _VIT[size]
    return GliaConfig(name=name, backbone=arch, backbone_pretrained=tag, **kwargs)


#: Each preset's config as data (timm's style): its constructor builds from a copy, and model
#: options are checked against it before any data work (``registry.check_model_options``).
PRESET_CONFIGS: dict[str, GliaConfig] = {
    "glia_vit_tiny": _preset("glia_vit_tiny", "tiny"),
    "glia_vit_nano": _preset("glia_vit_nano", "tiny", depth=4),
    "glia_vit_small": _preset("glia_vit_small", "small"),
    "glia_vit_base": _preset("glia_vit_base", "base"),
    "glia_vit_base_resnet50": _preset("glia_vit_base_resnet50", "base", local_stream="resnet50"),
}


def preset_config(name: str) -> GliaConfig:
    """A fresh copy of preset ``name``'s config (the build sets overrides on it)."""
    return replace(PRESET_CONFIGS[name])


@register_model
def glia_vit_tiny(backbone_weights: str | None = None, **overrides: Any) -> GLIA:
    """ViT-Ti/16 backbone: the edge size."""
    return _build(preset_config("glia_vit_tiny"), backbone_weights, overrides)


@register_model
def glia_vit_nano(backbone_weights: str | None = None, **overrides: Any) -> GLIA:
    """ViT-Ti/16 cut to its first 4 blocks (4 adapters): the camera-rate size, markedly cheaper
    than ``glia_vit_tiny``; the packaged synthetic default model uses it."""
    return _build(preset_config("glia_vit_nano"), backbone_weights, overrides)


@register_model
def glia_vit_small(backbone_weights: str | None = None, **overrides: Any) -> GLIA:
    """ViT-S/16 backbone: the balanced size."""
    return _build(preset_config("glia_vit_small"), backbone_weights, overrides)


@register_model
def glia_vit_base(backbone_weights: str | None = None, **overrides: Any) -> GLIA:
    """ViT-B/16 backbone: the paper's setting."""
    return _build(preset_config("glia_vit_base"), backbone_weights, overrides)


@register_model
def glia_vit_base_resnet50(backbone_weights: str | None = None, **overrides: Any) -> GLIA:
    """ViT-B/16 with LoDa's local stream (frozen ResNet-50, ImageNet-normalised input, BatchNorm as
    LoDa, 1x1-GELU-3x3-pool-7x7 extractor, 196 concatenated tokens); GLIA's adapters and head."""
    return _build(preset_config("glia_vit_base_resnet50"), backbone_weights, overrides)


def model_from_config(cfg: GliaConfig | dict[str, Any], backbone_weights: str | None = None,
                      local_weights: str | None = None) -> GLIA:
    """Rebuild a model from a saved config (checkpoints)."""
    if isinstance(cfg, dict):
        cfg = GliaConfig.from_dict(cfg)
    return GLIA(cfg, backbone_weights=backbone_weights, local_weights=local_weights)


__all__ = ["GLIA", "GliaConfig", "InteractionAdapter", "CrossAttention", "ConvLocalStream",
           "ResNetLocalStream", "model_from_config"]
