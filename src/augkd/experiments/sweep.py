"""Grids of training runs: ``augkd sweep --config BASE --grid augment.magnitude=0,2,4,6 kd=off,on --seeds 2``.

Every point of the grid (times every seed) is one ``augkd train`` process with its own run folder
``<out>/<axis>-<value>_..._seed-<s>``. Finished runs (``summary.json`` present) are skipped and interrupted ones
resumed, so a sweep is resumable by running the same command again; a run folder made with other settings (its
``config.yaml`` differs in a key that changes results) stops the sweep before anything runs, unless
``--rerun-changed`` starts it over. Every run's config is built before the
first run starts, so a typo in any axis fails at once. When every run is done the report is written
(:mod:`augkd.experiments.report`).

Any config key can be an axis (``kd.lambda=0.5,1,2``, ``model.name=fastnet9,resnet20``,
``augment.policy=ra-n2-m9,aa-cifar10``). One axis is special: ``kd=off,on`` turns distillation off (clears
``kd.teacher``) or keeps the base config's teacher.

With ``cache=True`` (``augkd sweep --cache``) the KD runs with a live teacher share teacher soft-label caches
(:mod:`augkd.distill.cache`): runs whose configs differ only in what the teacher's answers do not depend on (KD
loss settings, the student model, the optimizer, EMA, evaluation and naming) form one group, whose cache is built
once with ``augkd teacher-cache`` (at the largest ``kd.k`` of the group) by the first of its runs to start, and
every run of the group trains from it (``kd.cache=...``). Runs without KD never wait for a cache. With a fixed
``data_seed`` the initialization seed does not change the augmented stream either, so a grid over ``--seeds``
shares one cache per point instead of one per seed.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from augkd.config import ConfigError, describe_changes
from augkd.io import atomic_write_text

__all__ = [
    "Axis",
    "CacheGroup",
    "SweepError",
    "SweepRun",
    "expand_grid",
    "group_caches",
    "parse_grid",
    "plan_sweep",
    "run_sweep",
]

MANIFEST = "sweep.json"
KD_SWITCH = {"off": False, "false": False, "no": False, "on": True, "true": True, "yes": True}
CACHES = "caches"
#: Config keys (and sections, ending in ``.``) that the teacher's answers on the augmented images do not depend
#: on: runs that differ only in these can share one teacher cache. Anything not listed keeps runs apart, so an
#: unknown key can cost a second cache but never a wrong one. ``kd.temperature`` and ``kd.mode`` are listed
#: for ``renorm`` only: a ``partial`` cache stores the log-sum-exp at its own temperature.
CACHE_IRRELEVANT = (
    "name",
    "out_dir",
    "threads",
    "eval_batch_size",
    "eval_every",
    "eval_flip",
    "channels_last",
    "model.",
    "optim.",
    "ema.",
    "checkpoint.",
    "kd.lambda",
    "kd.k",
    "kd.weighting",
    "kd.t2_scale",
    "kd.preset",
    "kd.cache",
)


class SweepError(ValueError):
    """A grid that cannot run (bad axis syntax, a config error in one of its points, failed runs)."""


@dataclass(frozen=True)
class Axis:
    """One grid axis: a dotted config key (or ``kd``/``seed``) and its values as written."""

    key: str
    values: tuple[str, ...]

    @property
    def label(self) -> str:
        """Short name used in run folder names: the last part of the key (``augment.magnitude`` -> ``magnitude``)."""
        return self.key.rsplit(".", 1)[-1]


@dataclass
class SweepRun:
    """One run of a sweep: its folder name, the axis values it takes and the overrides that realise them."""

    name: str
    point: dict[str, str]
    overrides: list[str] = field(default_factory=list)
    config: Any = None
    """The run's :class:`~augkd.train.config.TrainConfig`, built by :func:`plan_sweep`."""


def parse_grid(items: Sequence[str]) -> list[Axis]:
    """``["augment.magnitude=0,2,4", "kd=off,on"]`` -> axes. Values are split on commas, kept as written.

    Raises:
        SweepError: an item without ``=``, an empty value list, a key given twice, or a bad ``kd`` value.
    """
    axes: list[Axis] = []
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise SweepError(f"grid axis {item!r} must look like key=v1,v2 (e.g. augment.magnitude=0,2,4,6)")
        values = tuple(v.strip() for v in raw.split(",") if v.strip())
        if not values:
            raise SweepError(f"grid axis {key!r} has no values")
        if len(set(values)) != len(values):
            raise SweepError(f"grid axis {key!r} repeats a value: {raw}")
        if any(a.key == key for a in axes):
            raise SweepError(f"grid axis {key!r} is given twice")
        if key == "kd":
            bad = [v for v in values if v.lower() not in KD_SWITCH]
            if bad:
                raise SweepError(f"grid axis 'kd' takes off/on, got {bad[0]!r}")
        axes.append(Axis(key, values))
    return axes


def _folder_value(value: str) -> str:
    """A grid value as it appears in a run folder name: a path becomes its last two parts joined by ``-``."""
    if "/" not in value:
        return value
    parts = Path(value).with_suffix("").parts
    return "-".join(p for p in parts[-2:] if p not in ("", "/", ".", ".."))


def expand_grid(axes: Sequence[Axis], seeds: Sequence[int]) -> list[SweepRun]:
    """Every combination of the axes' values (row-major, the last axis fastest), once per seed (seed outermost)."""
    if any(a.key == "seed" for a in axes) and seeds:
        raise SweepError("give seeds either as a grid axis seed=... or with --seeds, not both")
    runs = []
    combos = list(itertools.product(*(a.values for a in axes))) if axes else [()]
    for seed in seeds if seeds else [None]:  # seeds outermost: a sweep cut short still covers the whole grid once
        for combo in combos:
            point = {a.key: v for a, v in zip(axes, combo, strict=True)}
            parts = [f"{a.label}-{_folder_value(v)}" for a, v in zip(axes, combo, strict=True)]
            overrides = []
            for key, value in point.items():
                if key == "kd":
                    if not KD_SWITCH[value.lower()]:
                        overrides += ["kd.teacher=''", "kd.cache=''"]
                else:
                    overrides.append(f"{key}={value}")
            if seed is not None:
                point["seed"] = str(seed)
                parts.append(f"seed-{seed}")
                overrides.append(f"seed={seed}")
            runs.append(SweepRun("_".join(parts) or "base", point, overrides))
    names = [r.name for r in runs]
    clash = next((n for n in names if names.count(n) > 1), None)
    if clash is not None:
        raise SweepError(f"two grid points would share the run folder {clash!r}; use values that differ in name")
    return runs


def plan_sweep(
    config: str | None, axes: Sequence[Axis], seeds: Sequence[int], overrides: Sequence[str], out: Path
) -> list[SweepRun]:
    """The runs of a sweep, each with its full override list; builds every run's config to catch errors early.

    Raises:
        SweepError: a point whose config is invalid (the message names the run and the key), or ``kd=on`` while
            the base config has no teacher.
    """
    runs = expand_grid(axes, seeds)
    for run in runs:
        run.overrides = [*overrides, *run.overrides, f"out_dir={out}", f"name={run.name}"]
        cfg = run.config = _run_config(config, run)
        if "kd" in run.point and KD_SWITCH[run.point["kd"].lower()] and not cfg.kd.enabled:
            raise SweepError(
                f"run {run.name}: kd=on needs a teacher (set kd.teacher or kd.cache in the config or as an override)"
            )
        missing = missing_path(cfg)
        if missing:  # found now, not in the log of a run that fails after the others have trained
            raise SweepError(f"run {run.name}: {missing}; no run was started")
    return runs


def _run_config(config: str | None, run: SweepRun) -> Any:
    from augkd.config import load_config
    from augkd.train.config import TrainConfig

    try:
        return load_config(TrainConfig, config, run.overrides)
    except ValueError as exc:
        raise SweepError(f"run {run.name}: {str(exc).splitlines()[0]}") from None


@dataclass
class CacheGroup:
    """KD runs that can share one teacher cache: built once into ``folder`` at ``k`` (the largest ``kd.k``)."""

    folder: Path
    runs: list[str]
    k: int
    overrides: list[str]
    """The overrides of the group's first run: the cache is built from that run's config."""
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    seconds: float | None = None
    """Wall time of this sweep's build of the cache (None: not built by this call, e.g. already complete)."""


def _stream_key(cfg_dict: dict[str, Any]) -> dict[str, Any]:
    """The flattened config without the keys that the teacher's answers do not depend on."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, node: dict[str, Any]) -> None:
        for key, value in node.items():
            dotted = f"{prefix}{key}"
            if isinstance(value, dict) and value and dotted != "model.kwargs":
                walk(dotted + ".", value)
            else:
                flat[dotted] = value

    walk("", cfg_dict)
    partial = flat.get("kd.mode") == "partial"
    irrelevant = CACHE_IRRELEVANT if partial else (*CACHE_IRRELEVANT, "kd.temperature", "kd.mode")
    if flat.get("data_seed", -1) >= 0:  # `seed` then draws only the initialization and dropout
        irrelevant = (*irrelevant, "seed")
    return {
        k: v for k, v in flat.items() if not any(k == r or (r.endswith(".") and k.startswith(r)) for r in irrelevant)
    }


def group_caches(config: str | None, runs: Sequence[SweepRun], out: Path) -> dict[str, CacheGroup]:
    """Group the sweep's KD runs that use a live teacher by the augmentation stream their teacher sees.

    Returns:
        run name -> its :class:`CacheGroup` (runs of one group share the object); runs without KD, or that
        already name a ``kd.cache``, are not in it.
    """
    from augkd.config import config_to_dict
    from augkd.distill.teacher import parse_teacher

    groups: dict[str, CacheGroup] = {}
    by_run: dict[str, CacheGroup] = {}
    for run in runs:
        cfg = _run_config(config, run)
        if not cfg.kd.teacher or cfg.kd.cache:
            continue
        key = _stream_key(config_to_dict(cfg))
        if parse_teacher(cfg.kd.teacher).source == "checkpoint":  # timm:NAME / torchvision:NAME stay as written
            key["kd.teacher"] = str(Path(cfg.kd.teacher).resolve())
        digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:12]
        group = groups.get(digest)
        if group is None:
            group = groups[digest] = CacheGroup(out / CACHES / digest, [], cfg.kd.k, list(run.overrides))
        group.runs.append(run.name)
        group.k = max(group.k, cfg.kd.k)
        by_run[run.name] = group
    return by_run


def missing_path(cfg: Any) -> str | None:
    """The first path ``cfg`` names that does not exist (the teacher, its cache, the data), as a sentence."""
    from augkd.distill.teacher import parse_teacher, teacher_missing
    from augkd.train.build import teacher_spec

    if cfg.kd.teacher and parse_teacher(cfg.kd.teacher).source != "checkpoint":
        why = teacher_missing(teacher_spec(cfg))  # the weight file of timm:NAME / torchvision:NAME
        if why:
            return f"kd.teacher {cfg.kd.teacher}: {why}"
    elif cfg.kd.teacher and not Path(cfg.kd.teacher).is_file():
        return f"kd.teacher {cfg.kd.teacher} is not a file"
    if cfg.kd.cache and not Path(cfg.kd.cache).is_dir():
        return f"kd.cache {cfg.kd.cache} is not a folder (build it with augkd teacher-cache)"
    if (cfg.data.dataset == "folder" or not cfg.data.download) and not Path(cfg.data.root).exists():
        return f"data.root {cfg.data.root} does not exist"
    return None


def _status(run_dir: Path) -> str:
    if (run_dir / "summary.json").is_file():
        return "done"
    if (run_dir / "last.pt").is_file():
        return "partial"
    return "new"


def stale_runs(runs: Sequence[SweepRun], out: Path) -> dict[str, dict[str, tuple[Any, Any]]]:
    """The runs in ``out`` made from other settings than the sweep would use now: ``{run name: changes}``.

    A finished run counts as stale when any key that changes results differs (not ``threads``, workers or the
    cache folders; :data:`~augkd.train.config.RESULT_NEUTRAL`); a partial one when ``--resume`` would refuse the
    change (:data:`~augkd.train.config.RESUME_MAY_CHANGE`). ``kd.cache`` may differ: a teacher cache holds the
    very soft labels of its teacher. A run folder whose ``config.yaml`` cannot be read is stale as a whole. The
    ``device`` and ``amp`` of a finished run compare by what they resolved to (CPU or CUDA, float32 or bf16), not
    by their text: ``amp=auto`` means float32 on one CPU and bf16 on another.
    """
    from augkd.train.config import RESULT_NEUTRAL, RESUME_MAY_CHANGE, changed_keys, read_saved_config

    stale: dict[str, dict[str, tuple[Any, Any]]] = {}
    for run in runs:
        run_dir = out / run.name
        status = _status(run_dir)
        if status == "new":
            continue
        try:
            saved = read_saved_config(run_dir / "config.yaml")
        except ConfigError:
            stale[run.name] = {"config.yaml": ("unreadable", "-")}
            continue
        allowed = RESULT_NEUTRAL if status == "done" else RESUME_MAY_CHANGE
        refused, _ = changed_keys(saved, run.config, allowed | {"kd.cache"})
        if status == "done":
            _compare_precision(run_dir, saved, run.config, refused)
        if refused:
            stale[run.name] = refused
    return stale


def _resolved(cfg: Any) -> tuple[str, str] | None:
    """``(device type, precision)`` that ``cfg`` resolves to on this machine, named as ``summary.json`` names
    them (``"cpu"``, ``"off"`` / ``"bfloat16"``); None where it cannot be resolved here (a CUDA device missing)."""
    from augkd.train.build import RunError, amp_name, resolve_amp, resolve_device

    try:
        device = resolve_device(cfg.device)
        dtype = resolve_amp(cfg.amp, device)
    except RunError:
        return None
    return device.type, amp_name(dtype)


def _compare_precision(run_dir: Path, saved: dict[str, Any], cfg: Any, refused: dict[str, Any]) -> None:
    """Judge ``device`` and ``amp`` of a finished run by what they resolved to, not by their text.

    ``amp=auto`` is float32 on a CPU without native bf16 and bf16 on one with it (``device=auto`` likewise CPU or
    CUDA), so a sweep resumed on another machine would silently train its remaining runs in another precision.
    The precision a finished run used is in its ``summary.json``: a run whose precision differs from what the
    sweep would use here is stale even if the text is the same, and one whose text differs (``amp=off`` given
    to match an ``auto`` run trained in float32) is not. Updates ``refused`` in place.
    """
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
        used = (_device_type(summary["device"]), str(summary["amp"]))
    except (OSError, ValueError, KeyError, TypeError):
        return  # a summary from another augkd version: the text comparison stands
    now = _resolved(cfg)
    if now is None:
        return
    refused.pop("device", None)
    refused.pop("amp", None)
    if used[0] != now[0]:
        refused["device"] = (f"{saved.get('device', 'auto')} ran on {used[0]}", f"{cfg.device} runs on {now[0]} here")
    if used[1] != now[1]:
        hint = f"; amp={'off' if used[1] == 'off' else used[1].replace('bfloat16', 'bf16')} matches it"
        refused["amp"] = (
            f"{saved.get('amp', 'auto')} trained in {_precision_name(used[1])}",
            f"{cfg.amp} trains in {_precision_name(now[1])} here{hint}",
        )


def _device_type(name: str) -> str:
    """``"cuda:0"`` -> ``"cuda"``."""
    return name.split(":", 1)[0]


def _precision_name(amp: str) -> str:
    return "float32" if amp == "off" else amp


def run_sweep(
    config: str | None,
    grid: Sequence[str],
    out: str | Path,
    seeds: int | Sequence[int] | None = None,
    overrides: Sequence[str] = (),
    jobs: int = 1,
    report: bool = True,
    log: Callable[[str], None] = print,
    cache: bool = False,
    rerun_changed: bool = False,
) -> dict[str, Any]:
    """Run (or continue) a sweep and write its report; returns ``{"runs": [...], "report": {...} | None}``.

    Args:
        config: base YAML config (None: the defaults).
        grid: axes as ``key=v1,v2`` strings.
        out: sweep folder; runs go to ``<out>/<run name>``, their logs to ``<out>/<run name>/train.log``, the
            report to ``<out>/report``.
        seeds: a number of seeds (0..n-1) or an explicit list; 0 or ``[]`` keeps the config's seed; None: one
            seed (0), or the grid's own ``seed`` axis.
        overrides: ``key=value`` applied to every run before the grid's own.
        jobs: runs at once (each gets ``cpu_count // jobs`` torch threads unless ``threads`` is set).
        report: write the report when every run is done.
        cache: share teacher caches among KD runs that differ only in KD settings (see the module docstring);
            the caches go to ``<out>/caches/<key>/``.
        rerun_changed: start over the runs of ``out`` that were made with other settings (:func:`stale_runs`);
            without it such a run stops the sweep before anything runs.

    Raises:
        SweepError: bad grid or config, or a run folder made with other settings (before anything runs), or
            runs that failed (after the others finish).
    """
    out = Path(out)
    axes = parse_grid(grid)
    if seeds is None:  # default: one seed, unless the grid has a seed axis
        seeds = 0 if any(a.key == "seed" for a in axes) else 1
    seed_list = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    if jobs < 1:
        raise SweepError(f"--jobs must be >= 1, got {jobs}")
    runs = plan_sweep(config, axes, seed_list, overrides, out)
    stale = stale_runs(runs, out)
    if stale and not rerun_changed:
        name, changes = next(iter(stale.items()))
        raise SweepError(
            f"run {name} in {out} was made with other settings ({describe_changes(changes, 2)}); "
            f"{len(stale)} run(s) differ. Pass --rerun-changed to start them over, or choose another --out"
        )
    caches = group_caches(config, runs, out) if cache else {}
    out.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {
        "config": config,
        "grid": [{"key": a.key, "values": list(a.values)} for a in axes],
        "seeds": seed_list,
        "overrides": list(overrides),
        "runs": [{"name": r.name, "point": r.point} for r in runs],
    }
    if cache:
        manifest["caches"] = _caches_manifest(caches)
    _write_manifest(out, manifest)
    env = dict(os.environ)
    threads = max(1, (os.cpu_count() or 1) // jobs)
    if jobs > 1:
        env.setdefault("OMP_NUM_THREADS", str(threads))
    extra = [f"threads={threads}"] if jobs > 1 and not any(o.startswith("threads=") for o in overrides) else []
    status = {r.name: "changed" if r.name in stale else _status(out / r.name) for r in runs}
    todo = [r for r in runs if status[r.name] != "done"]
    log(f"augkd sweep: {len(runs)} runs ({len(runs) - len(todo)} already done) -> {out}")
    if stale:
        log(f"augkd sweep: starting over {len(stale)} run(s) made with other settings: {', '.join(stale)}")
    if caches:
        n_groups = len({id(g) for g in caches.values()})
        log(f"augkd sweep: {len(caches)} KD runs share {n_groups} teacher cache(s) in {out / CACHES}")
    failed: list[str] = []
    interrupted = threading.Event()  # Ctrl-C: the running runs stop (they share the terminal), no new one starts

    def one(i_run: tuple[int, SweepRun]) -> None:
        i, run = i_run
        if interrupted.is_set():
            return
        run_dir = out / run.name
        cmd = [sys.executable, "-m", "augkd", "train", "--quiet"]
        if config:
            cmd += ["--config", str(config)]
        cmd += [*run.overrides, *extra]
        group = caches.get(run.name)
        if group is not None:
            if not _ensure_cache(config, group, extra, env, log):
                failed.append(run.name)
                log(f"[{i}/{len(todo)}] {run.name}: FAILED, its teacher cache could not be built")
                return
            cmd.append(f"kd.cache={group.folder}")
        partial = status[run.name] == "partial"
        cmd += ["--resume"] if partial else ["--overwrite"]
        run_dir.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        log(f"[{i}/{len(todo)}] {run.name}: {'resuming' if partial else 'starting'}")
        with open(run_dir / "train.log", "a") as fh:
            rc = subprocess.call(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
        if rc in (130, -signal.SIGINT):
            interrupted.set()
            log(f"[{i}/{len(todo)}] {run.name}: interrupted; the same command resumes it")
            return
        if rc != 0 or _status(run_dir) != "done":
            failed.append(run.name)
            log(f"[{i}/{len(todo)}] {run.name}: FAILED (exit {rc}); see {run_dir / 'train.log'}")
            return
        summary = json.loads((run_dir / "summary.json").read_text())
        log(f"[{i}/{len(todo)}] {run.name}: error {summary.get('final_error')}% in {time.perf_counter() - t0:.0f}s")

    if caches:  # runs without KD first: they never wait for a cache
        todo.sort(key=lambda r: r.name in caches)

    try:
        if jobs == 1:
            for item in enumerate(todo, 1):
                one(item)
        else:
            with ThreadPoolExecutor(max_workers=jobs) as pool:
                list(pool.map(one, enumerate(todo, 1)))
    except KeyboardInterrupt:
        interrupted.set()  # the pool's queued runs return at once instead of starting
        raise
    if interrupted.is_set():
        raise KeyboardInterrupt
    if cache:
        manifest["caches"] = _caches_manifest(caches)
        _write_manifest(out, manifest)
    if failed:
        raise SweepError(f"{len(failed)} of {len(runs)} runs failed ({', '.join(failed)}); rerun to retry them")
    result: dict[str, Any] = {"runs": [str(out / r.name) for r in runs], "report": None}
    if cache:
        result["caches"] = manifest["caches"]
    if report:
        from augkd.experiments.report import make_report

        result["report"] = make_report([out], out / "report")
        log(f"report: {result['report']['markdown']}")
    return result


def _ensure_cache(
    config: str | None, group: CacheGroup, extra: list[str], env: dict[str, str], log: Callable[[str], None]
) -> bool:
    """Build (or finish) the group's cache once; the group's other runs wait here. True when it is complete."""
    with group.lock:
        done = group.folder / ".complete"
        if done.is_file():
            return True
        cmd = [sys.executable, "-m", "augkd", "teacher-cache", "--quiet", "--out", str(group.folder)]
        if config:
            cmd += ["--config", str(config)]
        cmd += ["--k", str(group.k), *group.overrides, *extra]
        group.folder.mkdir(parents=True, exist_ok=True)
        log(f"teacher cache {group.folder.name}: building for {len(group.runs)} run(s) at K={group.k}")
        t0 = time.perf_counter()
        with open(group.folder.parent / f"{group.folder.name}.log", "a") as fh:
            rc = subprocess.call(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
        if rc != 0:
            log(f"teacher cache {group.folder.name}: FAILED (exit {rc}); see {group.folder.parent}")
            return False
        group.seconds = time.perf_counter() - t0
        atomic_write_text(done, json.dumps({"seconds": group.seconds, "runs": group.runs}) + "\n")
        log(f"teacher cache {group.folder.name}: built in {group.seconds:.0f}s")
        return True


def _write_manifest(out: Path, manifest: dict[str, Any]) -> None:
    """Write ``sweep.json``; a run of some seeds of the sweep already there (``--seeds 2,``) adds to its manifest.

    The existing manifest is kept and extended when it describes the same sweep (config, grid and overrides):
    its seeds and runs gain the new ones, and its caches the new or rebuilt ones. Otherwise it is replaced.
    """
    path = out / MANIFEST
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        old = None
    if isinstance(old, dict) and all(old.get(k) == manifest[k] for k in ("config", "grid", "overrides")):
        names = {r["name"] for r in manifest["runs"]}
        merged = dict(manifest)
        merged["seeds"] = sorted(set(old.get("seeds", [])) | set(manifest["seeds"]))
        merged["runs"] = [r for r in old.get("runs", []) if r.get("name") not in names] + manifest["runs"]
        if "caches" in old or "caches" in manifest:
            new_caches = manifest.get("caches", [])
            folders = {c["folder"] for c in new_caches}
            merged["caches"] = [c for c in old.get("caches", []) if c.get("folder") not in folders] + new_caches
        manifest = merged
    atomic_write_text(path, json.dumps(manifest, indent=2) + "\n")


def _caches_manifest(caches: dict[str, CacheGroup]) -> list[dict[str, Any]]:
    """One entry per cache: its folder, runs, K and build time (read back from ``.complete`` on a resumed sweep).

    ``teacher_passes_saved`` counts the live-teacher passes over the training data that sharing avoids (one per
    run beyond the first; building the cache is the one pass that is paid).
    """
    entries = []
    for group in {id(g): g for g in caches.values()}.values():
        done = group.folder / ".complete"
        seconds = group.seconds
        if seconds is None and done.is_file():
            seconds = json.loads(done.read_text()).get("seconds")
        entries.append(
            {
                "folder": str(group.folder),
                "runs": group.runs,
                "k": group.k,
                "build_seconds": seconds,
                "teacher_passes_saved": len(group.runs) - 1,
            }
        )
    return entries
