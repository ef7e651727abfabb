"""Registry behaviour and a forward (and, for small nets, backward) pass through every registered model."""

from __future__ import annotations

import pytest
import torch

from augkd.models import count_parameters, create_model, get_model_info, list_models

PAPER_MODELS = [
    "wrn_28_10",
    "shake_shake_26_2x32d",
    "shake_shake_26_2x96d",
    "shake_shake_26_2x112d",
    "pyramidnet_272_a200_shakedrop",
    *[f"efficientnet_b{i}" for i in range(9)],
    "resnet20",
    "resnet32",
    "resnet56",
]

# Networks too heavy for a full-size CPU forward in a unit test: run them on a reduced input instead.
REDUCED_INPUT = {
    "wrn_28_10": 8,
    "shake_shake_26_2x64d": 8,
    "shake_shake_26_2x96d": 8,
    "shake_shake_26_2x112d": 8,
    "pyramidnet_272_a200_shakedrop": 8,
    **{f"efficientnet_b{i}": 64 for i in range(5)},
}
# Too large to build with real tensors quickly: test_efficientnet.py builds them on the meta device only.
META_ONLY = {"efficientnet_b5", "efficientnet_b6", "efficientnet_b7", "efficientnet_b8"}
# Forward + backward (in training mode) only for the small networks; the others get an inference forward.
BACKWARD_MAX_PARAMS = 1_000_000


def test_list_models_contains_paper_names() -> None:
    names = list_models()
    assert names == sorted(names)
    missing = set(PAPER_MODELS) - set(names)
    assert not missing, f"not registered: {missing}"


def test_unknown_name_raises_with_suggestions() -> None:
    with pytest.raises(ValueError, match=r"unknown model 'wrn_28_1'.*wrn_28_10"):
        create_model("wrn_28_1", num_classes=10)
    with pytest.raises(ValueError, match="shake_shake_26_2x32d"):
        get_model_info("shake_shake_26_2x32")


def test_bad_num_classes() -> None:
    with pytest.raises(ValueError, match="num_classes"):
        create_model("resnet20", num_classes=0)


def test_info_input_sizes() -> None:
    sizes = [get_model_info(f"efficientnet_b{i}")["input_size"] for i in range(9)]
    assert sizes == [224, 240, 260, 300, 380, 456, 528, 600, 672]
    for name in ("wrn_28_10", "shake_shake_26_2x96d", "pyramidnet_272_a200_shakedrop", "resnet56"):
        info = get_model_info(name)
        assert info["input_size"] == 32
        assert info["description"]


@pytest.mark.parametrize("name", [n for n in list_models() if n not in META_ONLY])
def test_forward_shape(name: str) -> None:
    torch.manual_seed(0)
    size = REDUCED_INPUT.get(name, get_model_info(name)["input_size"])
    model = create_model(name, num_classes=7)
    x = torch.randn(2, 3, size, size)
    if count_parameters(model) <= BACKWARD_MAX_PARAMS:
        model.train()
        out = model(x)
        assert out.shape == (2, 7)
        out.sum().backward()
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        assert all(g is not None for g in grads)
        assert all(torch.isfinite(g).all() for g in grads)
    model.eval()
    with torch.inference_mode():
        out = model(x)
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()
