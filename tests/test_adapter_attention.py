"""The adapters' attention: SDPA in PyTorch, unchanged outputs and weights, fused by OpenVINO."""
from __future__ import annotations

import collections

import pytest
import torch

from glia_edge.models import create_model
from glia_edge.models.glia import CrossAttention

TINY = {"depth": 2, "adapter_dim": 16, "adapter_heads": 2, "head_hidden": 32, "local_channels": (8, 16, 16, 24)}


def _reference(attn: CrossAttention, x: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
    """The attention as written before SDPA: q*scale @ K^T -> softmax -> @ V, with its four transposes."""
    b, n, c = x.shape
    m = ctx.shape[1]
    q = attn.q(attn.norm_q(x)).reshape(b, n, attn.heads, attn.head_dim).transpose(1, 2)
    kv = attn.kv(attn.norm_kv(ctx)).reshape(b, m, 2, attn.heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    weights = torch.softmax((q * attn.scale) @ kv[0].transpose(-2, -1), dim=-1)
    return attn.proj((weights @ kv[1]).transpose(1, 2).reshape(b, n, c))


def test_sdpa_matches_the_previous_graph_with_the_same_weights() -> None:
    torch.manual_seed(0)
    attn = CrossAttention(64, 4).eval()
    x, ctx = torch.randn(3, 197, 64), torch.randn(3, 196, 64)
    with torch.no_grad():
        assert (attn(x, ctx) - _reference(attn, x, ctx)).abs().max().item() <= 1e-4


def test_whole_model_and_onnx_branch_agree_and_keys_are_unchanged() -> None:
    torch.manual_seed(0)
    model = create_model("glia_vit_tiny", **TINY).eval()
    keys = {"q.weight", "q.bias", "kv.weight", "kv.bias", "proj.weight", "proj.bias", "norm_q.weight", "norm_q.bias",
            "norm_kv.weight", "norm_kv.bias"}
    assert set(model.adapters[0].local_to_global.state_dict()) == keys
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        sdpa = model(x)
        originals = [a.forward for a in model.modules() if isinstance(a, CrossAttention)]
        for module in model.modules():
            if isinstance(module, CrossAttention):
                module.forward = (lambda m: lambda q, c: _reference(m, q, c))(module)  # type: ignore[method-assign]
        reference = model(x)
    assert originals and (sdpa - reference).abs().max().item() <= 1e-4


def test_openvino_pytorch_frontend_makes_sdpa_ops() -> None:
    ov = pytest.importorskip("openvino")
    torch.manual_seed(0)
    model = create_model("glia_vit_tiny", **TINY).eval()
    converted = ov.convert_model(model, example_input=torch.rand(1, 3, 224, 224))
    ops = collections.Counter(op.get_type_name() for op in converted.get_ops())
    adapters = len(model.adapters)
    # two cross-attentions per adapter, plus the timm blocks' own attention
    assert ops["ScaledDotProductAttention"] >= 2 * adapters, ops
    assert ops["Softmax"] == 0, ops
