"""augkd.models.external: timm / torchvision networks by name, their weight files, and what is refused.

No model hub is reachable here: every weight file is made by the test (a network built by timm or torchvision,
its state dict saved as safetensors and as a ``.pth``) and read back through augkd.
"""

from __future__ import annotations

import json
import os
import pickle
import warnings

import pytest
import timm
import torch
import torchvision
from safetensors.torch import save_file

from augkd.models import external
from augkd.models.build import build_model
from augkd.models.config import ModelConfig
from augkd.models.external import (
    WeightsError,
    classifier_keys,
    load_weights,
    read_weight_file,
    resolve_weights,
)


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], skip: tuple[str, ...] = ()) -> None:
    assert set(a) == set(b)
    for key in a:
        if key not in skip:
            assert torch.equal(a[key], b[key]), key


@pytest.fixture(scope="module")
def timm_files(tmp_path_factory):
    """timm's test_resnet (1000 classes, random weights) saved as .safetensors and .pth."""
    out = tmp_path_factory.mktemp("timm")
    torch.manual_seed(1)
    model = timm.create_model("test_resnet")
    save_file(model.state_dict(), out / "w.safetensors")
    torch.save(model.state_dict(), out / "w.pth")
    return model, out


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_a_timm_student_starts_from_a_weight_file(timm_files, suffix):
    model, out = timm_files
    same_head = build_model(
        ModelConfig(name="timm:test_resnet", weights=str(out / f"w{suffix}")), 1000, init_weights=True
    )
    _same(same_head.state_dict(), model.state_dict())
    notes: list[str] = []
    cfg = ModelConfig(name="timm:test_resnet", weights=str(out / f"w{suffix}"), kwargs={"drop_rate": 0.1})
    student = build_model(cfg, 10, init_weights=True, log=notes.append)
    assert student.fc.out_features == 10 and student.drop_rate == 0.1  # model.kwargs reached timm.create_model
    _same(student.state_dict(), model.state_dict() | {k: student.state_dict()[k] for k in ("fc.weight", "fc.bias")})
    assert len(notes) == 1 and "fc.weight, fc.bias" in notes[0] and "10 classes" in notes[0]
    # a checkpoint rebuilds the network without the file: its own weights come after
    assert build_model(cfg, 10).fc.out_features == 10


def test_a_torchvision_network_from_safetensors_and_pth(tmp_path):
    torch.manual_seed(2)
    model = torchvision.models.get_model("squeezenet1_1")  # its head is a 1x1 convolution, not a linear layer
    save_file(model.state_dict(), tmp_path / "w.safetensors")
    torch.save({"state_dict": model.state_dict()}, tmp_path / "ckpt.pth")  # a training checkpoint's entry
    assert classifier_keys(model) == ["classifier.1.weight", "classifier.1.bias"]
    for name in ("w.safetensors", "ckpt.pth"):
        built = build_model(
            ModelConfig(name="torchvision:squeezenet1_1", weights=str(tmp_path / name)), 1000, init_weights=True
        )
        _same(built.state_dict(), model.state_dict())


def test_unsafe_and_unfit_files_are_one_line_errors(timm_files, tmp_path):
    model, out = timm_files
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's deprecation
        torch.jit.save(torch.jit.trace(model.eval(), torch.randn(1, 3, 32, 32)), tmp_path / "scripted.pt")
    torch.save(model, tmp_path / "whole.pth")

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'PWNED'}",))

    (tmp_path / "evil.pth").write_bytes(pickle.dumps({"fc.weight": Payload()}))
    torch.save({"fc.weight": torch.zeros(2), "epoch": 3}, tmp_path / "mixed.pth")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    cases = {
        "scripted.pt": "TorchScript archive is refused",
        "whole.pth": "refused: it pickles objects",
        "evil.pth": "refused",
        "mixed.pth": "not a state dict (entry 'epoch' is a int)",
        "junk.safetensors": "not a readable safetensors file",
        "missing.pth": f"weight file not found: {tmp_path / 'missing.pth'}",
    }
    for name, message in cases.items():
        with pytest.raises(WeightsError) as info:
            read_weight_file(tmp_path / name)
        text = str(info.value)
        assert message in text and "\n" not in text, (name, text)
        if name in ("scripted.pt", "whole.pth"):
            assert "model.state_dict()" in text  # says how to save what is accepted
    assert not (tmp_path / "PWNED").exists()
    # weights of another architecture: the first key that does not fit is named
    with pytest.raises(
        WeightsError, match=r"w.safetensors into timm:test_efficientnet: .*the file has no 'conv_stem.weight'"
    ):
        build_model(
            ModelConfig(name="timm:test_efficientnet", weights=str(out / "w.safetensors")), 1000, init_weights=True
        )
    state = read_weight_file(out / "w.safetensors")
    bad = state | {"layer1.0.conv1.weight": state["layer1.0.conv1.weight"][:, :1]}
    with pytest.raises(WeightsError, match=r"'layer1.0.conv1.weight' is \(.*\) in the file and \(.*\) in the model"):
        load_weights(timm.create_model("test_resnet"), bad, "x")
    with pytest.raises(WeightsError, match="the model has no 'extra'"):
        load_weights(timm.create_model("test_resnet"), state | {"extra": torch.zeros(1)}, "x")
    with pytest.raises(ValueError, match="timm has no model 'no_such_net'"):
        build_model(ModelConfig(name="timm:no_such_net"), 10)
    with pytest.raises(ValueError, match="does not take"):
        build_model(ModelConfig(name="torchvision:squeezenet1_1", kwargs={"drop_path_rate": 0.1}), 10)


@pytest.fixture
def empty_hubs(tmp_path, monkeypatch):
    """Empty hub caches, and any download attempt recorded instead of made."""
    from huggingface_hub import constants

    torch_home, hf_home = tmp_path / "torch-hub", tmp_path / "hf-hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hf_home))
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(torch_home))
    fetched: list[str] = []

    def no_network(url, dst, *args, **kwargs):
        fetched.append(url)
        raise ConnectionError("no network in tests")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    monkeypatch.setattr("huggingface_hub.hf_hub_download", lambda repo, filename, **kw: no_network(repo, None))
    yield torch_home, hf_home, fetched
    torch.hub.set_dir(old)


def test_pretrained_comes_only_from_the_hub_caches_without_consent(empty_hubs, timm_files):
    torch_home, hf_home, fetched = empty_hubs
    with pytest.raises(
        WeightsError, match=r"no pretrained weights on this machine \(looked for .*resnet18-f37072fd.pth\)"
    ):
        resolve_weights("torchvision:resnet18", "pretrained")
    with pytest.raises(WeightsError, match=r"looked for .*models--timm--test_resnet.*model.safetensors"):
        resolve_weights("timm:test_resnet", "pretrained")
    assert fetched == []  # nothing was fetched without consent
    with pytest.raises(WeightsError, match="downloading the pretrained weights failed: no network"):
        resolve_weights("torchvision:resnet18", "pretrained", download=True)
    assert fetched == ["https://download.pytorch.org/models/resnet18-f37072fd.pth"]
    with pytest.raises(WeightsError, match="only for timm:NAME and torchvision:NAME"):
        resolve_weights("fastnet9", "pretrained")
    # files already in the caches are found: torch hub's checkpoints/ and the Hugging Face snapshot layout
    planted = torch_home / "checkpoints" / "resnet18-f37072fd.pth"
    planted.parent.mkdir(parents=True, exist_ok=True)
    torch.save(torchvision.models.resnet18().state_dict(), planted)
    assert resolve_weights("torchvision:resnet18", "pretrained") == planted
    model, out = timm_files
    repo = timm.create_model("test_resnet").pretrained_cfg["hf_hub_id"]
    folder = hf_home / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("0" * 40)
    snapshot = folder / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "model.safetensors").write_bytes((out / "w.safetensors").read_bytes())
    student = build_model(ModelConfig(name="timm:test_resnet", weights="pretrained"), 1000, init_weights=True)
    _same(student.state_dict(), model.state_dict())


def test_the_library_tables_list_and_describe_their_networks():
    timm_src, tv_src = external.EXTERNAL_SOURCES["timm"], external.EXTERNAL_SOURCES["torchvision"]
    assert "efficientnet_b0" in timm_src.names("efficientnet_b*") and "resnet18" in tv_src.names("resnet*")
    prep = timm_src.preprocessing("test_resnet", timm.create_model("test_resnet"))
    assert prep.mean == (0.5, 0.5, 0.5) and prep.input_size == 160
    tv = tv_src.preprocessing("mobilenet_v3_small", None)
    assert tv.input_size == 224 and tv.std == (0.229, 0.224, 0.225)
    labels = tv_src.labels(torchvision.models.squeezenet1_1())
    assert len(labels) == 1000 and labels[0] == "n01440764"  # ImageNet-1k WordNet ids, in the heads' order
    assert (
        external.external_name("timm:resnet18") == ("timm", "resnet18") and external.external_name("wrn_28_10") is None
    )


def test_cli_lists_library_models_with_a_filter(capsys):
    from augkd.cli import main

    assert main(["models", "--source", "torchvision", "resnet1"]) == 0
    out = capsys.readouterr()
    expected = [
        "torchvision:resnet101",
        "torchvision:resnet152",
        "torchvision:resnet18",
        "torchvision:wide_resnet101_2",
    ]
    assert out.out.split() == expected  # a substring, as for augkd's own names
    assert "4 torchvision models" in out.err
    assert main(["models", "--source", "timm", "efficientnet_b*", "--json"]) == 0
    names = [row["name"] for row in json.loads(capsys.readouterr().out)]
    assert "timm:efficientnet_b0" in names and all(n.startswith("timm:efficientnet_b") for n in names)
