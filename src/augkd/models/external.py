"""Networks from timm and torchvision by name (``timm:NAME``, ``torchvision:NAME``) and the weight files they load.

A teacher (``kd.teacher=timm:NAME``) and a student (``model.name=timm:NAME``) both come from here:

- :data:`EXTERNAL_SOURCES` holds one row per library: how to build a network by name, list the names, read its
  input preprocessing (timm's pretrained config, torchvision's weights meta), the labels of its outputs (ImageNet
  WordNet ids for an ImageNet-1k head) and where its pretrained weights would be cached;
- :func:`read_weight_file` reads ``.safetensors`` or a ``.pth``/``.pt`` state dict with ``weights_only=True``;
  TorchScript archives and pickled model objects are refused with a line that says how to save a state dict;
- :func:`load_weights` loads a state dict strictly and names the first key that does not fit, in one line;
- :func:`resolve_weights` turns ``FILE`` or ``pretrained`` into a file: ``pretrained`` uses only files already
  in the hub caches (Hugging Face's for timm, torch hub's ``checkpoints/`` for torchvision), and downloads only
  when the caller passes consent (``data.download=true``).
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from augkd.checkpoint import SEALED_FORMAT, CheckpointError, load_checkpoint
from augkd.registry import Registry

__all__ = [
    "EXTERNAL_SOURCES",
    "ExternalSource",
    "Preprocessing",
    "WeightsError",
    "classifier_keys",
    "create_external",
    "external_name",
    "load_weights",
    "read_weight_file",
    "resolve_weights",
    "weights_mismatch",
]

#: Suffixes read as a pickled state dict (``torch.load(weights_only=True)``); ``.safetensors`` is read as such.
PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
_SAVE_HINT = (
    "save a state dict instead: safetensors.torch.save_file(model.state_dict(), 'weights.safetensors') "
    "or torch.save(model.state_dict(), 'weights.pth')"
)


class WeightsError(ValueError):
    """A weight file that is missing, unsafe, not a state dict, or does not fit the network (one line)."""


@dataclass(frozen=True)
class Preprocessing:
    """What a network expects: per-channel ``mean`` and ``std`` on the [0, 1] scale and its square input size."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    input_size: int


@dataclass(frozen=True)
class ExternalSource:
    """One library of networks.

    Attributes:
        create: ``(name, num_classes or None, **kwargs) -> nn.Module`` with random weights (None: the library's
            default head, 1000 ImageNet classes).
        names: ``pattern -> sorted names`` (``*`` wildcards; an empty pattern lists all).
        preprocessing: ``(name, model) -> Preprocessing`` the network was trained with.
        labels: ``model -> labels of its outputs`` (ImageNet WordNet ids for an ImageNet-1k head), or None.
        pretrained: ``name -> [(cached file, download)]``: where its pretrained weights would lie, and how to fetch
            them there (called only with consent).
    """

    create: Callable[..., nn.Module]
    names: Callable[[str], list[str]]
    preprocessing: Callable[[str, nn.Module], Preprocessing]
    labels: Callable[[nn.Module], list[str] | None]
    pretrained: Callable[[str], list[tuple[Path, Callable[[], Path]]]]


# ----------------------------------------------------------------------------------------------------------------
# timm


def _timm_create(name: str, num_classes: int | None, **kwargs: Any) -> nn.Module:
    import timm

    if not timm.is_model(name):
        raise ValueError(f"timm has no model {name!r} (see `augkd models --source timm --filter ...`)")
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    return timm.create_model(name, pretrained=False, **kwargs)


def _timm_names(pattern: str) -> list[str]:
    import timm

    return sorted(timm.list_models(pattern or "", exclude_filters=["test_*"] if not pattern else ()))


def _timm_preprocessing(name: str, model: nn.Module) -> Preprocessing:
    from timm.data import resolve_data_config

    cfg = resolve_data_config({}, model=model)
    return Preprocessing(tuple(cfg["mean"]), tuple(cfg["std"]), int(cfg["input_size"][-1]))


def _imagenet_labels(num_classes: int) -> list[str] | None:
    from timm.data import ImageNetInfo, infer_imagenet_subset

    subset = infer_imagenet_subset({"num_classes": num_classes})
    return list(ImageNetInfo(subset).label_names()) if subset else None


def _timm_labels(model: nn.Module) -> list[str] | None:
    return _imagenet_labels(int(getattr(model, "num_classes", 0) or 0))


def _hf_cache_dir() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _torch_hub_file(url: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(url.split("?")[0]).name


def _url_download(url: str) -> Callable[[], Path]:
    def fetch() -> Path:
        dst = _torch_hub_file(url)
        dst.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(dst), progress=False)
        return dst

    return fetch


def _timm_pretrained(name: str) -> list[tuple[Path, Callable[[], Path]]]:
    import timm

    with torch.device("meta"):
        cfg = dict(timm.create_model(name, pretrained=False).pretrained_cfg)
    found: list[tuple[Path, Callable[[], Path]]] = []
    if cfg.get("file"):
        found.append((Path(cfg["file"]), lambda: Path(cfg["file"])))
    repo = cfg.get("hf_hub_id")
    if repo:
        from huggingface_hub import hf_hub_download, try_to_load_from_cache

        for filename in ("model.safetensors", "pytorch_model.bin"):
            cached = try_to_load_from_cache(repo, filename)
            folder = _hf_cache_dir() / f"models--{repo.replace('/', '--')}"
            where = Path(cached) if isinstance(cached, str) else folder / "snapshots" / "*" / filename

            def fetch(repo: str = repo, filename: str = filename) -> Path:
                return Path(hf_hub_download(repo, filename))

            found.append((where, fetch))
    if cfg.get("url"):
        found.append((_torch_hub_file(cfg["url"]), _url_download(cfg["url"])))
    return found


# ----------------------------------------------------------------------------------------------------------------
# torchvision


def _tv_create(name: str, num_classes: int | None, **kwargs: Any) -> nn.Module:
    import torchvision.models as tvm

    if name not in _tv_names(""):
        raise ValueError(f"torchvision has no classification model {name!r} (see `augkd models --source torchvision`)")
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    return tvm.get_model(name, weights=None, **kwargs)


def _tv_names(pattern: str) -> list[str]:
    import torchvision.models as tvm

    return sorted(tvm.list_models(module=tvm, include=pattern or None))


def _tv_weights(name: str) -> Any:
    import torchvision.models as tvm

    return tvm.get_model_weights(name).DEFAULT


def _tv_preprocessing(name: str, model: nn.Module) -> Preprocessing:
    transform = _tv_weights(name).transforms()
    return Preprocessing(tuple(transform.mean), tuple(transform.std), int(transform.crop_size[0]))


def _tv_labels(model: nn.Module) -> list[str] | None:
    # torchvision's ImageNet-1k heads list their classes in the standard (sorted WordNet id) order, as timm's do.
    keys = classifier_keys(model)
    return _imagenet_labels(int(model.state_dict()[keys[0]].shape[0])) if keys else None


def _tv_pretrained(name: str) -> list[tuple[Path, Callable[[], Path]]]:
    url = _tv_weights(name).url
    return [(_torch_hub_file(url), _url_download(url))]


#: ``timm:NAME`` and ``torchvision:NAME``: the libraries a network can come from by name.
EXTERNAL_SOURCES: Registry[ExternalSource] = Registry(
    "model source",
    {
        "timm": ExternalSource(_timm_create, _timm_names, _timm_preprocessing, _timm_labels, _timm_pretrained),
        "torchvision": ExternalSource(_tv_create, _tv_names, _tv_preprocessing, _tv_labels, _tv_pretrained),
    },
)


def external_name(spec: str) -> tuple[str, str] | None:
    """``(source, name)`` of ``timm:NAME`` / ``torchvision:NAME``; None for anything else (an augkd model name)."""
    source, sep, name = str(spec).partition(":")
    return (source, name) if sep and source in EXTERNAL_SOURCES else None


def create_external(source: str, name: str, num_classes: int | None = None, **kwargs: Any) -> nn.Module:
    """Build ``source``'s network ``name`` with random weights.

    Raises:
        ValueError: unknown name, or ``kwargs`` the builder does not take (one line).
    """
    try:
        return EXTERNAL_SOURCES[source].create(name, num_classes, **kwargs)
    except TypeError as exc:
        raise ValueError(f"{source}:{name} does not take {sorted(kwargs)}: {str(exc).splitlines()[0]}") from None


# ----------------------------------------------------------------------------------------------------------------
# Weight files


def classifier_keys(model: nn.Module) -> list[str]:
    """State-dict keys of the network's output layer (weight, then bias if any).

    timm names it in its pretrained config; for any other network it is the last weight whose leading size is the
    number of outputs (a linear layer, or squeezenet's 1x1 convolution).
    """
    state = model.state_dict()
    cfg = getattr(model, "pretrained_cfg", None) or {}
    heads = cfg.get("classifier")
    names = [heads] if isinstance(heads, str) else list(heads or [])
    keys = [f"{h}.{p}" for h in names for p in ("weight", "bias") if f"{h}.{p}" in state]
    if keys:
        return keys
    weights = [k for k, v in state.items() if k.endswith(".weight") and v.dim() >= 2]
    if not weights:
        return []
    head = weights[-1].removesuffix(".weight")
    return [k for k in (f"{head}.weight", f"{head}.bias") if k in state]


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.endswith("/constants.pkl") or "/code/" in n for n in z.namelist())


def _unwrap(path: Path, obj: Any) -> dict[str, torch.Tensor]:
    """The state dict inside what a ``.pth`` held: itself, or timm's / augkd's training checkpoint entry."""
    if isinstance(obj, Mapping) and obj.get("format") == SEALED_FORMAT:
        try:
            obj = load_checkpoint(path)
        except CheckpointError as exc:
            raise WeightsError(str(exc)) from None
    if isinstance(obj, Mapping):
        for entry in ("state_dict_ema", "model_ema", "state_dict", "model"):  # timm's load_checkpoint order
            if isinstance(obj.get(entry), Mapping) and obj[entry]:
                obj = obj[entry]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise WeightsError(f"{path}: not a state dict (holds {type(obj).__name__}); {_SAVE_HINT}")
    bad = next((k for k, v in obj.items() if not isinstance(v, torch.Tensor)), None)
    if bad is not None:
        raise WeightsError(f"{path}: not a state dict (entry {bad!r} is a {type(obj[bad]).__name__}); {_SAVE_HINT}")
    state = {str(k): v for k, v in obj.items()}
    if all(k.startswith("module.") for k in state):  # saved from a DDP/DataParallel wrapper
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


def read_weight_file(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict in a ``.safetensors`` file, or in a ``.pth``/``.pt``/``.bin`` read with ``weights_only=True``.

    Raises:
        WeightsError: missing file; a TorchScript archive or a pickled model object (either can run code); a file
            that holds no state dict; a damaged file.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weight file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path, device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise WeightsError(f"{path}: not a readable safetensors file ({str(exc).splitlines()[0]})") from None
    if _is_torchscript(path):
        raise WeightsError(f"{path}: a TorchScript archive is refused (it runs code when loaded); {_SAVE_HINT}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise WeightsError(
            f"{path}: refused: it pickles objects (a whole model?) and a pickle can run code; {_SAVE_HINT}"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise WeightsError(f"{path}: not a readable weight file ({str(exc).strip().splitlines()[0]})") from None
    return _unwrap(path, obj)


def weights_mismatch(model: nn.Module, state: Mapping[str, Any]) -> str | None:
    """None when the state dict ``state`` fits ``model`` exactly, else its first misfit in one phrase: a key the
    model needs and the file lacks, a shape that differs, or a key the model does not have."""
    own = model.state_dict()
    for key, value in own.items():
        if key not in state:
            return f"the file has no {key!r}"
        theirs = getattr(state[key], "shape", None)
        if theirs is not None and tuple(theirs) != tuple(value.shape):
            return f"{key!r} is {tuple(theirs)} in the file and {tuple(value.shape)} in the model"
    extra = next((k for k in state if k not in own), None)
    return None if extra is None else f"the model has no {extra!r}"


def load_weights(
    model: nn.Module, state: Mapping[str, torch.Tensor], what: str, *, new_head: bool = False
) -> list[str]:
    """Load ``state`` into ``model`` strictly; ``what`` names both in the error (``FILE into timm:NAME``).

    Args:
        new_head: the output layer may differ (fine-tuning on other classes): when only its keys do not fit, they
            are left out and the layer keeps its random initialization.

    Returns:
        the keys left out (empty unless ``new_head`` dropped the output layer).

    Raises:
        WeightsError: missing, unexpected or misshapen keys, naming the first one.
    """
    state = dict(state)
    dropped: list[str] = []
    if new_head:
        head = classifier_keys(model)
        own = model.state_dict()
        if any(k not in state or tuple(state[k].shape) != tuple(own[k].shape) for k in head):
            dropped = [k for k in head if k in state]
            state = {k: v for k, v in state.items() if k not in head}
            state.update({k: own[k] for k in head})
    problem = weights_mismatch(model, state)
    if problem:
        raise WeightsError(f"{what}: the weights do not fit: {problem}")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise WeightsError(f"{what}: the weights do not fit: {str(exc).strip().splitlines()[0]}") from None
    return dropped


def resolve_weights(spec: str, weights: str, *, download: bool = False) -> Path:
    """The file ``weights`` names for the network ``spec`` (``timm:NAME``...): a path, or ``pretrained``.

    ``pretrained`` looks in the hub caches only; with ``download`` (the user's consent, ``data.download=true``) a
    missing file is fetched into them.

    Raises:
        WeightsError: a missing file, naming where it was looked for.
    """
    if weights != "pretrained":
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsError(f"weight file not found: {path}")
        return path
    parsed = external_name(spec)
    if parsed is None:
        raise WeightsError(f"pretrained weights exist only for timm:NAME and torchvision:NAME networks, not {spec!r}")
    source, name = parsed
    try:
        candidates = EXTERNAL_SOURCES[source].pretrained(name)
    except (ValueError, KeyError) as exc:  # torchvision: a model without published weights
        raise WeightsError(f"{spec}: no pretrained weights are published ({str(exc).splitlines()[0]})") from None
    if not candidates:
        raise WeightsError(f"{spec}: no pretrained weights are published")
    for path, _ in candidates:
        if "*" not in str(path) and path.is_file():
            return path
    if download:
        errors = []
        for _, fetch in candidates:
            try:
                return fetch()
            except Exception as exc:  # any failure of one mirror: try the next, then name them all
                errors.append(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
        raise WeightsError(f"{spec}: downloading the pretrained weights failed: {'; '.join(errors)}")
    raise WeightsError(
        f"{spec}: no pretrained weights on this machine (looked for {candidates[0][0]}); put the file there, pass "
        "a weight file instead of 'pretrained', or allow the download with data.download=true"
    )
