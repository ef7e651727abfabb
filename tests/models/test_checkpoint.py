"""augkd.models.checkpoint: one reader of run checkpoints, one wording per failure, the model rebuilt with weights."""

from __future__ import annotations

import pytest
import torch

from augkd.checkpoint import CheckpointError, save_checkpoint
from augkd.cli import main
from augkd.models import create_model
from augkd.models.checkpoint import read_latest_run_checkpoint, read_run_checkpoint, run_info


def _state(name="resnet20", classes=3, **model_cfg):
    model = create_model(name, num_classes=classes)
    info = run_info(
        epoch=1,
        step=7,
        config={"model": {"name": name, **model_cfg}, "seed": 0},
        classes=[f"c{i}" for i in range(classes)],
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
        best_top1=12.5,
    )
    return {**info, "model": model.state_dict()}, model


def test_round_trip_builds_the_model_with_its_weights(tmp_path):
    state, model = _state()
    save_checkpoint(tmp_path / "best.pt", state)
    ckpt = read_run_checkpoint(tmp_path / "best.pt")
    assert ckpt.classes == ["c0", "c1", "c2"] and ckpt.num_classes == 3 and (ckpt.epoch, ckpt.step) == (1, 7)
    assert ckpt.normalize == ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)) and ckpt.model_config.name == "resnet20"
    rebuilt = ckpt.build_model().eval()
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(rebuilt(x), model.eval()(x))
    ckpt.check_classes(3)
    with pytest.raises(CheckpointError, match="predicts 3 classes but the eval data has 10"):
        ckpt.check_classes(10, "the eval data")
    ckpt.check_classes(["c0", "c1", "c2"])
    with pytest.raises(CheckpointError, match=r"other classes than the eval data has \(3 vs 3; label 1 is 'c1' there"):
        ckpt.check_classes(["c0", "dog", "c2"], "the eval data")
    with pytest.raises(CheckpointError, match=r"\(3 vs 2; label 2 is 'c2' there and absent here\)"):
        ckpt.check_classes(["c0", "c1"])
    save_checkpoint(tmp_path / "last.pt", state)
    latest, problems = read_latest_run_checkpoint(tmp_path)
    assert latest.path == tmp_path / "last.pt" and problems == [] and latest.step == 7
    assert read_latest_run_checkpoint(tmp_path / "nothing-here") is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s.update(format="other/1"), r"not an augkd run checkpoint \(format='other/1'\)"),
        (lambda s: s.pop("classes"), r"not an augkd run checkpoint \(no classes entries\)"),
        (
            lambda s: s["config"]["model"].update(nme="x"),
            r"damaged run checkpoint config \(unknown config key 'model.nme'",
        ),
        (lambda s: s.update(normalize={"mean": [0.5]}), r"damaged run checkpoint \(normalize has no mean/std\)"),
    ],
)
def test_every_failure_is_one_line_naming_the_file(tmp_path, change, message):
    state, _ = _state()
    change(state)
    save_checkpoint(tmp_path / "x.pt", state)
    with pytest.raises(CheckpointError, match=message) as info:
        read_run_checkpoint(tmp_path / "x.pt")
    assert str(info.value).startswith(str(tmp_path / "x.pt")) and "\n" not in str(info.value)


def test_weights_that_do_not_fit_are_one_line(tmp_path):
    state, _ = _state()
    state["model"] = create_model("resnet32", num_classes=3).state_dict()
    save_checkpoint(tmp_path / "x.pt", state)
    ckpt = read_run_checkpoint(tmp_path / "x.pt")
    with pytest.raises(
        CheckpointError, match="the model weights do not fit 'resnet20': the model has no 'stage1.3.conv1.weight'"
    ):
        ckpt.build_model()
    # A wider network: the first mismatching key and both shapes are named.
    state["model"] = create_model("resnet20", num_classes=3).state_dict()
    state["model"]["conv1.weight"] = torch.zeros(32, 3, 3, 3)
    save_checkpoint(tmp_path / "y.pt", state)
    with pytest.raises(CheckpointError, match=r"'conv1.weight' is \(32, 3, 3, 3\) in the file and \(16, 3, 3, 3\)"):
        read_run_checkpoint(tmp_path / "y.pt").build_model()


def test_eval_of_a_mismatched_checkpoint_is_a_one_line_error(tmp_path, capsys):
    """augkd eval used to load the weights unguarded: a traceback."""
    state, _ = _state()
    state["model"] = create_model("resnet32", num_classes=3).state_dict()
    save_checkpoint(tmp_path / "x.pt", state)
    ckpt = read_run_checkpoint(tmp_path / "x.pt")
    with pytest.raises(CheckpointError):
        ckpt.build_model()
    assert main(["eval", str(tmp_path / "nope.pt")]) == 2
    assert capsys.readouterr().err.strip() == f"augkd eval: error: checkpoint not found: {tmp_path / 'nope.pt'}"
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        main(["--debug", "eval", str(tmp_path / "nope.pt")])  # --debug: the full traceback
