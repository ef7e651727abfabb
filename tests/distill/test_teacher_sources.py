"""Teachers from timm and torchvision (``kd.teacher=timm:NAME``): the same logits as the library's own model with
its own preprocessing, class maps, the teacher's own size and normalization, and a fingerprint that follows them.

The weight files are made here (random weights; no hub is reachable) and read back through augkd.
"""

from __future__ import annotations

import json

import pytest
import timm
import torch
import torch.nn.functional as F
import torchvision
from safetensors.torch import save_file
from timm.data import ImageNetInfo, resolve_data_config

from augkd.config import load_config
from augkd.distill.teacher import TeacherError, class_map_groups, load_teacher, parse_teacher, teacher_fingerprint
from augkd.models.external import WeightsError
from augkd.train.build import teacher_spec
from augkd.train.config import TrainConfig

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
CIFAR = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
WNIDS = ImageNetInfo().label_names()
#: Three ImageNet classes, in an order that is not the teacher's.
STUDENT = [WNIDS[207], WNIDS[3], WNIDS[151]]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def timm_teacher(tmp_path_factory):
    """timm's test_resnet (1000 ImageNet classes, mean 0.5, native 160 px) with random weights in a safetensors file."""
    out = tmp_path_factory.mktemp("timm-teacher")
    torch.manual_seed(3)
    model = timm.create_model("test_resnet").eval()
    with torch.no_grad():  # BatchNorm statistics away from the identity, so a normalization slip shows
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    save_file(model.state_dict(), out / "teacher.safetensors")
    return model, out / "teacher.safetensors"


def _student_batch(size: int, norm) -> tuple[torch.Tensor, torch.Tensor]:
    """Real-looking uint8 images, and the same normalized as a student with ``norm`` sees them."""
    g = torch.Generator().manual_seed(0)
    raw = torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8, generator=g)
    x01 = raw.float() / 255
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in norm)
    return x01, (x01 - mean) / std


def _reference(model, x01: torch.Tensor, mean, std, size: int) -> torch.Tensor:
    """The library's own preprocessing of a [0, 1] batch: resize to its size, normalize with its statistics."""
    x = F.interpolate(x01, size=(size, size), mode="bilinear", antialias=True)
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        return model(x)


def test_timm_teacher_logits_equal_timms_own_model_and_preprocessing(timm_teacher):
    model, weights = timm_teacher
    cfg = resolve_data_config({}, model=model)
    size = cfg["input_size"][-1]
    x01, student_x = _student_batch(64, CIFAR)
    expected = _reference(model, x01, cfg["mean"], cfg["std"], size)
    teacher = load_teacher(parse_teacher("timm:test_resnet", weights=str(weights)), 1000, student_norm=CIFAR)
    assert teacher.size == size == 160 and not teacher.model.training
    torch.testing.assert_close(teacher(student_x), expected, rtol=1e-4, atol=1e-4)
    # through the class map: the student's three classes, in the student's order
    mapped = load_teacher(
        parse_teacher("timm:test_resnet", weights=str(weights), class_map="auto"), STUDENT, student_norm=CIFAR
    )
    columns = [WNIDS.index(name) for name in STUDENT]
    torch.testing.assert_close(mapped(student_x), expected[:, columns], rtol=1e-4, atol=1e-4)


def test_set_size_and_normalization_win_over_the_sources(timm_teacher):
    model, weights = timm_teacher
    x01, student_x = _student_batch(48, IMAGENET)
    spec = parse_teacher("timm:test_resnet", weights=str(weights), size=48, norm=IMAGENET)
    teacher = load_teacher(spec, 1000, student_norm=IMAGENET)
    assert teacher.scale is None  # the same normalization as the student's: no conversion, no resize
    torch.testing.assert_close(teacher(student_x), _reference(model, x01, *IMAGENET, 48), rtol=1e-4, atol=1e-4)


def test_torchvision_teacher_logits_equal_torchvisions_own(tmp_path):
    torch.manual_seed(4)
    model = torchvision.models.get_model("mobilenet_v3_small").eval()
    torch.save(model.state_dict(), tmp_path / "mnv3.pth")
    meta = torchvision.models.get_model_weights("mobilenet_v3_small").DEFAULT.transforms()
    x01, student_x = _student_batch(32, CIFAR)
    expected = _reference(model, x01, meta.mean, meta.std, meta.crop_size[0])
    spec = parse_teacher("torchvision:mobilenet_v3_small", weights=str(tmp_path / "mnv3.pth"), class_map="auto")
    teacher = load_teacher(spec, STUDENT, student_norm=CIFAR)
    columns = [WNIDS.index(name) for name in STUDENT]
    torch.testing.assert_close(teacher(student_x), expected[:, columns], rtol=1e-4, atol=1e-4)


def test_a_fine_tuned_head_sets_the_teachers_classes(tmp_path):
    torch.manual_seed(5)
    model = timm.create_model("test_resnet", num_classes=3).eval()
    save_file(model.state_dict(), tmp_path / "ft.safetensors")
    teacher = load_teacher(parse_teacher("timm:test_resnet", weights=str(tmp_path / "ft.safetensors")), 3)
    assert teacher.model.fc.out_features == 3
    with pytest.raises(TeacherError, match="predicts 3 classes but the student's data has 10; set kd.class_map"):
        load_teacher(parse_teacher("timm:test_resnet", weights=str(tmp_path / "ft.safetensors")), 10)


def test_class_map_files_groups_and_errors(tmp_path):
    labels = ["cat", "tiger", "dog", "wolf", "car"]
    (tmp_path / "map.json").write_text(json.dumps({"feline": ["cat", "tiger"], "canine": "2", "unused": "car"}))
    (tmp_path / "map.txt").write_text("# student teacher...\nfeline cat tiger\ncanine dog  # by label\n")
    for name in ("map.json", "map.txt"):
        assert class_map_groups(str(tmp_path / name), ["canine", "feline"], labels, 5) == [[2], [0, 1]]
    with pytest.raises(TeacherError, match="no teacher class in .* for student classes bird, fish"):
        class_map_groups(str(tmp_path / "map.txt"), ["bird", "feline", "fish"], labels, 5)
    with pytest.raises(
        TeacherError, match="no teacher class among the teacher's class labels for student classes bird"
    ):
        class_map_groups("auto", ["cat", "bird"], labels, 5)
    with pytest.raises(TeacherError, match=r"teacher class 'tiger' \(for 'feline'\) is not one of the teacher's"):
        class_map_groups(str(tmp_path / "map.txt"), ["feline"], ["cat", "dog"], 2)
    with pytest.raises(TeacherError, match="file not found: .*nope.json"):
        class_map_groups(str(tmp_path / "nope.json"), ["feline"], labels, 5)
    with pytest.raises(TeacherError, match="auto needs a teacher whose classes have names"):
        class_map_groups("auto", ["cat"], None, 5)
    # a group of teacher classes gets the log of their summed probabilities
    from augkd.distill.teacher import Teacher

    teacher = Teacher(torch.nn.Identity(), class_groups=[[2], [0, 1]])
    logits = torch.randn(4, 5)
    torch.testing.assert_close(teacher(logits), torch.stack([logits[:, 2], logits[:, :2].logsumexp(1)], 1))
    probs = logits.softmax(1)
    restricted = teacher(logits).softmax(1)  # the same ratio as the summed probabilities of the groups
    torch.testing.assert_close(restricted[:, 1] / restricted[:, 0], (probs[:, 0] + probs[:, 1]) / probs[:, 2])


def test_fingerprint_follows_weights_size_normalization_and_class_map(timm_teacher, tmp_path):
    model, weights = timm_teacher
    base = parse_teacher("timm:test_resnet", weights=str(weights), class_map="auto")
    same = teacher_fingerprint(base)
    assert same == teacher_fingerprint(parse_teacher("timm:test_resnet", weights=str(weights), class_map="auto"))
    native = parse_teacher(
        "timm:test_resnet", weights=str(weights), class_map="auto", size=160, norm=((0.5,) * 3, (0.5,) * 3)
    )
    assert teacher_fingerprint(native) == same  # the source's own values, spelled out, are the same teacher
    changed = dict(model.state_dict())
    changed["fc.bias"] = changed["fc.bias"] + 1
    save_file(changed, tmp_path / "other.safetensors")
    (tmp_path / "map.txt").write_text(f"{STUDENT[0]} {STUDENT[0]}\n")
    others = [
        parse_teacher("timm:test_resnet", weights=str(tmp_path / "other.safetensors"), class_map="auto"),
        parse_teacher("timm:test_resnet", weights=str(weights), class_map="auto", size=96),
        parse_teacher("timm:test_resnet", weights=str(weights), class_map="auto", norm=IMAGENET),
        parse_teacher("timm:test_resnet", weights=str(weights), class_map=str(tmp_path / "map.txt")),
    ]
    prints = [teacher_fingerprint(s) for s in others]
    assert len({same, *prints}) == 5
    (tmp_path / "map.txt").write_text(f"{STUDENT[0]} 207\n")  # the map's content, not its name, keys the cache
    assert teacher_fingerprint(others[-1]) != prints[-1]


def test_config_keys_and_their_errors(timm_teacher, tmp_path):
    _, weights = timm_teacher

    def cfg(*overrides):
        return load_config(TrainConfig, None, list(overrides))

    spec = teacher_spec(
        cfg("kd.teacher=timm:test_resnet", f"kd.teacher_weights={weights}", "kd.teacher_size=96",
            "kd.teacher_norm=0.5,0.5,0.5/0.25,0.25,0.25", "kd.class_map=auto", "data.download=true")
    )  # fmt: skip
    assert (spec.source, spec.ref, spec.size) == ("timm", "test_resnet", 96)
    assert spec.class_map == "auto" and spec.download
    assert spec.norm == ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    assert teacher_spec(cfg("kd.teacher=timm:x", "kd.teacher_weights=w", "kd.teacher_norm=imagenet")).norm == IMAGENET
    # One override names the network and its file: timm:NAME@FILE is the two keys, down to the cache's key.
    one = teacher_spec(cfg(f"kd.teacher=timm:test_resnet@{weights}", "kd.class_map=auto"))
    two = teacher_spec(cfg("kd.teacher=timm:test_resnet", f"kd.teacher_weights={weights}", "kd.class_map=auto"))
    assert one == two and teacher_fingerprint(one) == teacher_fingerprint(two)
    bad = {
        ("kd.teacher=timm:test_resnet@a.pth", "kd.teacher_weights=b.pth"): "names the weights 'a.pth'",
        ("kd.teacher=timm:test_resnet@",): "expected timm:NAME@FILE",
        ("kd.teacher=timm:test_resnet",): "needs kd.teacher_weights=FILE",
        ("kd.teacher=runs/t/best.pt", "kd.teacher_weights=w.pth"): "kd.teacher_weights is for kd.teacher=timm:NAME",
        ("kd.teacher_norm=0.5,0.5/0.5,0.5",): "3 means and 3 positive stds",
        ("kd.teacher_norm=imagenett",): "kd.teacher_norm must be imagenet, cifar10, cifar100 or MEAN/STD",
        ("kd.teacher_size=4",): "kd.teacher_size must be 0",
    }
    for overrides, message in bad.items():
        with pytest.raises(Exception, match=message) as info:
            cfg(*overrides)
        assert "\n" not in str(info.value)
    with pytest.raises(WeightsError, match=f"weight file not found: {tmp_path / 'nope.safetensors'}"):
        load_teacher(parse_teacher("torchvision:resnet18", weights=str(tmp_path / "nope.safetensors")), 10)
