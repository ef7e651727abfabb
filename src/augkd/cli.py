"""``augkd <command>``: one function per command.

Run ``augkd --help`` for the list and ``augkd <command> --help`` for each command's options. Every command
turns bad input (a missing dataset, an unknown model, a config typo, a corrupt checkpoint) into a one-line
``augkd: error: ...`` message and exit status 2 instead of a traceback; ``augkd --debug <command>`` shows the
traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import augkd
from augkd.io import out_folder

__all__ = ["main"]

EPILOG_TRAIN = """\
examples:
  augkd train --config configs/cifar10-demo.yaml
  augkd train --config configs/cifar10-demo.yaml epochs=2 data.subset_per_class=500 name=quick
  augkd train --config configs/cifar10-demo.yaml augment.policy=geo-n2-m5 name=geo5
  augkd train --config configs/cifar10-demo.yaml --resume         # continue runs/<name>
  augkd train --config configs/paper/cifar10-wrn28-10-aa.yaml --dry-run data.dataset=folder \\
      data.root=../shared/data/cifar10-jpg.zip                     # build all, one step, write nothing
  torchrun --standalone --nproc_per_node 4 -m augkd train --config X   # DDP; batch_size is the global batch
overrides are dotted config keys (see `augkd config --list`), anywhere on the line; values are YAML scalars or
lists.
"""

EPILOG_TEACHER_CACHE = """\
examples:
  augkd teacher-cache --config configs/cifar10-demo.yaml augment.policy=geo-n2-m6 \\
      --teacher runs/teacher/best.pt --epochs 8 --k 10 --out runs/cache-geo6
  augkd train --config configs/cifar10-demo.yaml augment.policy=geo-n2-m6 kd.cache=runs/cache-geo6 kd.k=3
the overrides must be the student's (seed, augment.*, data.*, amp): any mismatch is an error at train time.
"""


EPILOG_SWEEP = """\
examples:
  augkd sweep --config configs/table1-cpu/student.yaml --grid augment.magnitude=0,2,4,6 kd=off,on --seeds 2 \\
      --out runs/table1-cpu/sweep
  augkd sweep --config configs/table1-cpu/student.yaml --grid kd.lambda=0.5,1,2 kd.k=1,3,10 --out runs/lambda-k
the same command again skips finished runs and resumes interrupted ones; kd=off clears kd.teacher.
"""


class CliError(Exception):
    """An error the CLI reports in one line."""


#: OpenMP settings the ``augkd`` command sets before torch is imported, unless the environment already sets any
#: of them. libgomp's default makes a thread that reaches a barrier spin for up to ~300,000 iterations before it
#: sleeps: on a CPU that another process keeps busy, the spinning threads steal the time slices of the one they
#: wait for and throughput collapses (augmentation 3.5-56x slower than with a passive wait on a 2-core AMD EPYC
#: next to busy processes; results/shared-cpu/README.md, which also says what was not measured).
OPENMP_DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE"}
_OPENMP_KEYS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")


def set_openmp_defaults(environ: dict[str, str] | None = None) -> bool:
    """Set :data:`OPENMP_DEFAULTS` in ``environ`` (default ``os.environ``) unless the user set any OpenMP wait
    setting or torch is already imported (OpenMP reads them once, at start-up); returns whether it set them."""
    environ = os.environ if environ is None else environ
    if "torch" in sys.modules or any(key in environ for key in _OPENMP_KEYS):
        return False
    environ.update(OPENMP_DEFAULTS)
    return True


def _checkpoint_arg(path: str, what: str = "checkpoint") -> Path:
    """The checkpoint file a command argument names: a run folder means its ``best.pt`` (else ``last.pt``); a
    file that is not a torch checkpoint at all (a YAML, a JSON) is a one-line error."""
    p = Path(path)
    if p.is_dir():
        for name in ("best.pt", "last.pt"):
            if (p / name).is_file():
                return p / name
        raise CliError(f"{what} {path}: a folder without best.pt or last.pt (expected a run folder or a .pt file)")
    if not p.exists():
        return p  # the run-checkpoint reader names the missing file, as it does for every caller
    try:
        with p.open("rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise CliError(f"{what} {path}: cannot read ({exc.strerror})") from None
    if magic != b"PK\x03\x04":  # torch.save's zip container; augkd never writes the legacy format
        raise CliError(f"{what} {path}: not a checkpoint (expected best.pt or last.pt of an augkd run)")
    return p


def _load_train_config(path: str | None, overrides: Sequence[str]):
    from augkd.config import load_config
    from augkd.train.config import TrainConfig

    return load_config(TrainConfig, path, list(overrides))


# ----------------------------------------------------------------------------------------------------------------
# commands


def cmd_train(args: argparse.Namespace) -> int:
    cfg = _load_train_config(args.config, args.overrides)
    if args.dry_run:
        from augkd.train.dryrun import dry_run, format_dry_run

        print(format_dry_run(dry_run(cfg, quiet=args.quiet)))
        return 0
    from augkd.train.loop import train

    train(cfg, resume=args.resume, quiet=args.quiet, overwrite=args.overwrite)
    return 0


def cmd_teacher_cache(args: argparse.Namespace) -> int:
    from augkd.train.teacher_cache import build_teacher_cache

    cfg = _load_train_config(args.config, args.overrides)
    summary = build_teacher_cache(
        cfg,
        args.out,
        teacher=args.teacher,
        epochs=args.epochs,
        k=args.k,
        logits_dtype=args.dtype,
        quiet=args.quiet or args.json,
    )
    if args.json:
        print(json.dumps(summary))
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from augkd.train.plan import format_plan, plan

    cfg = _load_train_config(args.config, args.overrides)
    result = plan(
        cfg,
        args.gpus,
        steps=args.steps,
        warmup=args.warmup,
        efficiency=args.efficiency,
        batch_per_device=args.batch_per_device,
    )
    print(json.dumps(result, indent=2) if args.json else format_plan(result))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    import torch

    from augkd.config import build_config
    from augkd.models.checkpoint import read_run_checkpoint
    from augkd.train.build import build_components
    from augkd.train.config import TrainConfig
    from augkd.train.loop import evaluate

    checkpoint = _checkpoint_arg(args.checkpoint)
    ckpt = read_run_checkpoint(checkpoint)
    cfg = build_config(TrainConfig, ckpt.config, args.overrides)
    parts = build_components(cfg, loaders=("eval",), normalization=ckpt.normalize, quiet=args.quiet)
    ckpt.check_classes(parts.eval_set.classes, "the eval data")
    model = ckpt.build_model(cfg.model).to(parts.device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    progress = not args.quiet and sys.stderr.isatty()  # no bar drawn into a log file or a pipe
    res = evaluate(model, parts.eval_loader, parts.normalize, parts.amp_dtype, flip=args.flip, progress=progress)
    res.update(checkpoint=str(checkpoint), model=cfg.model.name, eval_size=cfg.data.resolved_eval_size)
    if args.json:
        print(json.dumps(res))
    else:
        print(
            f"{cfg.model.name} on {res['n']} images at {res['eval_size']}px: top1 {res['top1']:.2f}% "
            f"top5 {res['top5']:.2f}% loss {res['loss']:.4f}"
        )
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    import torch

    from augkd.models import count_parameters, create_model, get_model_info, list_models

    if args.source != "augkd":
        from augkd.models.external import EXTERNAL_SOURCES

        pattern = args.filter if "*" in args.filter else f"*{args.filter}*" if args.filter else ""
        found = [f"{args.source}:{n}" for n in EXTERNAL_SOURCES[args.source].names(pattern)]
        if args.json:
            print(json.dumps([{"name": n} for n in found], indent=2))
            return 0
        print("\n".join(found))
        print(f"({len(found)} {args.source} models; use them as model.name=NAME or kd.teacher=NAME)", file=sys.stderr)
        return 0
    names = [n for n in list_models() if not args.filter or args.filter in n]
    rows = []
    for name in names:
        info = get_model_info(name)
        with torch.device("meta"):
            params = count_parameters(create_model(name, num_classes=args.num_classes))
        rows.append({**info, "params": params})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    width = max((len(r["name"]) for r in rows), default=4)
    print(f"{'name':<{width}}  {'params':>9}  {'input':>5}  description")
    for r in rows:
        print(f"{r['name']:<{width}}  {r['params'] / 1e6:>8.2f}M  {r['input_size']:>5}  {r['description']}")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from augkd.data import describe_dataset

    cfg = _load_train_config(args.config, args.overrides).data
    info = describe_dataset(cfg, prepare=args.prepare, quiet=args.quiet)
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    for split in ("train", "eval"):
        s = info.get(split)
        if not s:
            continue
        counts = s.get("counts_per_class", {})
        lo, hi = (min(counts.values()), max(counts.values())) if counts else (0, 0)
        print(
            f"{split}: {s.get('num_images')} images, {s.get('num_classes')} classes ({lo}-{hi} per class), "
            f"image size {s.get('image_size')}, source {s.get('source')}"
        )
        if "cache" in s:
            print(f"  cache: {s['cache']}")
    if info.get("bad_files"):
        print(f"bad files ({len(info['bad_files'])}, left out):")
        for line in info["bad_files"]:
            print(f"  {line}")
    for note in info.get("notes", []):
        print(f"note: {note}")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    import dataclasses
    import typing

    import yaml

    from augkd.config import config_to_dict, field_docs, key_name
    from augkd.train.config import TrainConfig

    if args.list:

        def walk(cls: type, prefix: str) -> None:
            docs = field_docs(cls)
            hints = typing.get_type_hints(cls)
            for f in dataclasses.fields(cls):
                if dataclasses.is_dataclass(hints[f.name]):
                    walk(hints[f.name], f"{prefix}{f.name}.")
                    continue
                default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
                print(f"{prefix}{key_name(f.name)} = {default!r}\n    {docs.get(f.name, '')}")

        walk(TrainConfig, "")
        return 0
    cfg = _load_train_config(args.config, args.overrides)
    print(yaml.safe_dump(config_to_dict(cfg), sort_keys=False), end="")
    return 0


def cmd_gallery(args: argparse.Namespace) -> int:
    import torch

    from augkd.data import build_datasets
    from augkd.experiments.gallery import make_gallery

    overrides = list(args.overrides) + ([f"data.root={args.data}"] if args.data else [])
    full = _load_train_config(args.config, overrides)
    if args.images < 1:
        raise CliError(f"--images must be >= 1, got {args.images}")
    if args.mix:
        from augkd.experiments.gallery import make_mix_gallery, mixed_training_images

        if not full.augment.mixes:
            raise CliError("--mix shows Mixup/CutMix: pass augment.mixup=ALPHA and/or augment.cutmix=ALPHA")
        out = _gallery_path(args.out, f"mix-{full.augment.spec()}", full.out_dir)
        train_set, _ = build_datasets(full.data, quiet=True)
        images, targets = mixed_training_images(full, train_set, args.images, args.epoch)
        print(f"wrote {make_mix_gallery(images, targets, train_set.classes, out)}")
        return 0
    out = _gallery_path(args.out, args.policy, full.out_dir)
    out_folder(out.parent)  # before the data is decoded
    train_set, _ = build_datasets(full.data, quiet=True)
    pick = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(args.seed))[: args.images]
    out = make_gallery(train_set.images[pick], args.policy, out, levels=args.levels)
    print(f"wrote {out}")
    return 0


def _gallery_path(out: str | None, policy: str, out_dir: str) -> Path:
    """The file ``augkd gallery`` writes: ``<out_dir>/gallery/<policy>.png`` by default; ``--out DIR/`` (or an
    existing folder) means ``DIR/<policy>.png``; a name without a suffix gets ``.png``."""
    name = f"{policy.replace('/', '_')}.png"
    if out is None:
        return Path(out_dir) / "gallery" / name
    if out.endswith(("/", os.sep)) or Path(out).is_dir():
        return Path(out) / name
    path = Path(out)
    return path if path.suffix else path.with_name(path.name + ".png")


def _seeds_arg(text: str) -> int | list[int]:
    """``--seeds``: a count (``3``: seeds 0, 1, 2) or a comma list (``1,2``; ``2,`` is the one seed 2)."""
    try:
        if "," not in text:
            n = int(text)
            if n < 0:
                raise ValueError
            return n
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: a number of seeds (3: seeds 0, 1, 2) or a comma list of seeds (1,2; one seed: 2,)"
        ) from None


def cmd_sweep(args: argparse.Namespace) -> int:
    from augkd.experiments.sweep import run_sweep

    run_sweep(
        args.config,
        args.grid,
        args.out,
        seeds=args.seeds,
        overrides=args.overrides,
        jobs=args.jobs,
        report=not args.no_report,
        log=lambda msg: print(msg, flush=True),
        cache=args.cache,
        rerun_changed=args.rerun_changed,
    )
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from augkd.experiments.report import make_report

    out_folder(args.out)
    res = make_report(args.runs, args.out, title=args.title)
    print(f"wrote {res['markdown']}, {res['json']}" + "".join(f", {p}" for p in res["plots"]))
    return 0


def cmd_ambiguity(args: argparse.Namespace) -> int:
    import torch

    from augkd.config import build_config
    from augkd.data import dataset_stats
    from augkd.data.pipeline import Normalize
    from augkd.distill.teacher import load_teacher, parse_teacher
    from augkd.experiments.ambiguity import ambiguity_report
    from augkd.models.checkpoint import read_run_checkpoint
    from augkd.train.build import build_components, teacher_spec
    from augkd.train.config import TrainConfig

    if args.images < 1:
        raise CliError(f"--images must be >= 1, got {args.images}")
    out_folder(args.out)  # before a minute of measuring
    overrides = list(args.overrides) + ([f"data.root={args.data}"] if args.data else [])
    if parse_teacher(args.teacher).source == "checkpoint":
        args.teacher = str(_checkpoint_arg(args.teacher, "teacher checkpoint"))
        ckpt = read_run_checkpoint(args.teacher)
        cfg = build_config(TrainConfig, ckpt.config, [*overrides, "device=cpu"])
        norm, checkpoint, spec = ckpt.normalize, ckpt, parse_teacher(args.teacher)  # not its run's own kd.*
    else:  # timm:NAME / torchvision:NAME with kd.teacher_weights=..., on the data of --data
        cfg = _load_train_config(None, [*overrides, f"kd.teacher={args.teacher}", "device=cpu"])
        stats = dataset_stats(cfg.data)
        norm, checkpoint, spec = (stats["mean"], stats["std"]), None, teacher_spec(cfg)
    parts = build_components(cfg, loaders=(), normalization=norm, quiet=True)
    dataset = parts.eval_set if args.split == "test" else parts.train_set
    if checkpoint is not None:
        checkpoint.check_classes(dataset.num_classes)
    teacher = load_teacher(spec, list(dataset.classes), "cpu", norm, checkpoint=checkpoint)
    normalize = Normalize(*norm)
    n = min(args.images, len(dataset))
    pick = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(args.seed))[:n]
    res = ambiguity_report(
        lambda x: teacher(normalize(x)),
        dataset.images[pick],
        dataset.labels[pick].long(),
        list(dataset.classes),
        args.policy,
        args.out,
        args.levels,
        fill=cfg.augment.fill,
        seed=args.seed,
        gallery=args.gallery,
        source=f"{cfg.data.root} ({args.split})",
        progress=not args.json and sys.stderr.isatty(),
    )
    if args.json:
        print(json.dumps(res))
        return 0
    print(f"clean: agreement {res['clean']['agree']:.1f}%, p(true) {res['clean']['p_true']:.3f}")
    for r in res["policy"]:
        print(f"{r['op']}: agreement {r['agree']:.1f}%, p(true) {r['p_true']:.3f}, entropy {r['entropy']:.3f}")
    print("wrote " + ", ".join(res["files"].values()))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.what == "augment":
        from augkd.bench.augment import run_augment_benchmark

        results: dict[str, object] = {
            str(size): run_augment_benchmark(
                image_size=size,
                batch_size=args.batch_size,
                device=args.device,
                spec=args.policy,
                repeats=2 if args.quick else args.repeats or 5,
            )
            for size in args.sizes
        }
    elif args.what == "train":
        results = _bench_train(args)
    elif args.what == "kd":
        from augkd.bench.kd import run_kd_benchmark

        results = run_kd_benchmark(
            model=args.model,
            teacher=args.teacher,
            batch_size=args.batch_size or 256,
            repeats=3 if args.quick else 10,
            teacher_size=args.teacher_size,
        )
    else:
        from augkd.bench.data import run_data_benchmark

        results = run_data_benchmark(batch_size=args.batch_size or 512, device=args.device, quick=args.quick)
    print(json.dumps(results, indent=2 if not args.json else None))
    return 0


def _bench_train(args: argparse.Namespace) -> dict[str, object]:
    """``augkd bench train``: whole training steps of augkd's trainer against timm's pipeline, per image size."""
    from augkd.bench.train import run_train_benchmark

    steps = 3 if args.quick else args.steps
    rounds = 1 if args.quick else args.repeats or 3
    return {
        str(size): run_train_benchmark(size, steps=steps, rounds=rounds, batch_size=args.batch_size, model=args.model)
        for size in args.sizes
    }


# ----------------------------------------------------------------------------------------------------------------
# parser


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Epilogs as written, and every option's default in its help unless the help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "default" in text.lower()
            or default is None
            or default is False
            or default in ("", [], argparse.SUPPRESS)
            or isinstance(action, (argparse._HelpAction, argparse._VersionAction))
        ):
            return text
        shown = (
            " ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in default)
            if isinstance(default, (list, tuple))
            else (f"{default:g}" if isinstance(default, float) else str(default))
        )
        return f"{text} (default: {shown.replace('%', '%%')})"


def _add_config_args(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument("--config", "-c", required=required, help="YAML config (see configs/); defaults if omitted")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. optim.lr=0.2")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="augkd",
        description="Train image classifiers with aggressive automated augmentation (AutoAugment, RandAugment, "
        "the paper's geometric space) made safe by top-K knowledge distillation.",
        epilog="Start with: augkd train --config configs/cifar10-demo.yaml   (see README.md)",
    )
    parser.add_argument("--version", action="version", version=f"augkd {augkd.__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="on an error, show the full traceback instead of the one-line message"
    )
    sub = parser.add_subparsers(dest="command", metavar="command")
    add = sub.add_parser

    def add_parser(name: str, **kwargs) -> argparse.ArgumentParser:
        p = add(name, formatter_class=_HelpFormatter, **kwargs)
        p.set_defaults(parser=p)  # main() reports a usage error under this command's usage line
        return p

    sub.add_parser = add_parser  # type: ignore[method-assign]

    p = sub.add_parser(
        "train",
        help="train a model (config + overrides)",
        epilog=EPILOG_TRAIN,
    )
    _add_config_args(p)
    p.add_argument("--resume", action="store_true", help="continue the run in <out_dir>/<name> from last.pt")
    p.add_argument("--overwrite", action="store_true", help="start over in an existing run folder")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar or per-epoch lines (CI)")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="build everything, run one step on a tiny real batch (1 image per class decoded), write nothing",
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "teacher-cache",
        help="store a teacher's top-K outputs on every augmented training image (then train with kd.cache=DIR)",
        epilog=EPILOG_TEACHER_CACHE,
    )
    _add_config_args(p)
    p.add_argument(
        "--teacher",
        help="teacher checkpoint, or timm:NAME / torchvision:NAME with kd.teacher_weights (default: kd.teacher)",
    )
    p.add_argument("--out", required=True, help="cache folder (resumed if it holds a cache of the same settings)")
    p.add_argument("--epochs", type=int, default=None, help="epochs 0..E-1 to cover (default: the config's epochs)")
    p.add_argument("--k", type=int, default=None, help="top classes kept per image (default: kd.k)")
    p.add_argument(
        "--dtype",
        choices=["float32", "float16"],
        default="float32",
        help="float32 (exact) or float16 (packed class indices, half-precision logits and statistics: 41 instead of "
        "76 bytes per image and epoch at K=10 and 1,000 classes)",
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar or summary line")
    p.set_defaults(func=cmd_teacher_cache)

    p = sub.add_parser(
        "plan",
        help="memory per GPU, images/s and wall time of a config on N GPUs, from a short calibration here",
        epilog="example: augkd plan --config configs/paper/cifar10-wrn28-10-aa.yaml --gpus 8\n"
        "Measures a few training steps at the per-GPU batch (batch_size / gpus) on this machine's device.",
    )
    _add_config_args(p, required=True)
    p.add_argument("--gpus", type=int, required=True, help="devices of the run (all nodes together)")
    p.add_argument("--steps", type=int, default=5, help="timed training steps (default 5)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    p.add_argument("--efficiency", type=float, default=1.0, help="fraction of linear scaling on N GPUs (default 1)")
    p.add_argument("--batch-per-device", type=int, default=None, help="calibrate at this per-device batch instead")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("eval", help="evaluate a checkpoint on its eval split (top-1, top-5, loss)")
    p.add_argument("checkpoint", help="an augkd checkpoint (best.pt or last.pt), or a run folder (its best.pt)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. data.eval_size=40 device=cpu")
    p.add_argument("--flip", action="store_true", help="average with the mirrored image")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--quiet", "-q", action="store_true")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser(
        "models",
        help="list registered models with parameter counts, or timm's / torchvision's (--source)",
        epilog="examples:\n  augkd models wrn\n  augkd models --source timm efficientnet_b\n"
        "  augkd models --source torchvision 'resnet*'",
    )
    p.add_argument("filter", nargs="?", default="", help="substring of the names to show (timm/torchvision: or a glob)")
    p.add_argument(
        "--source",
        choices=["augkd", "timm", "torchvision"],
        default="augkd",
        help="augkd's registered models, or the names usable as model.name / kd.teacher = timm:NAME, torchvision:NAME",
    )
    p.add_argument("--num-classes", type=int, default=10, help="classifier outputs for the parameter counts")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("data", help="inspect or prepare a dataset: counts per class, image size, cache status")
    _add_config_args(p)
    p.add_argument("--prepare", action="store_true", help="decode into the in-memory cache now")
    p.add_argument("--json", action="store_true")
    p.add_argument("--quiet", "-q", action="store_true")
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("config", help="print the resolved config, or --list every key with its doc")
    _add_config_args(p)
    p.add_argument("--list", action="store_true", help="list every config key, its default and meaning")
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("gallery", help="PNG grid of real images across augmentation ops and levels")
    _add_config_args(p)
    p.add_argument("--policy", default="geo-n2-m5", help="policy spec whose ops to show (e.g. geo-n2-m5, ra-n2-m9)")
    p.add_argument("--data", help="dataset folder or .zip (shortcut for data.root=...)")
    p.add_argument("--out", default=None, help="output PNG, or a folder ending in / (default: runs/gallery/POLICY.png)")
    p.add_argument("--images", type=int, default=4, help="how many images")
    p.add_argument("--levels", type=float, nargs="+", default=[0, 2, 4, 6, 8, 10], help="levels of the columns")
    p.add_argument("--seed", type=int, default=0, help="which images")
    p.add_argument(
        "--mix",
        action="store_true",
        help="show the run's training images after Mixup/CutMix (augment.mixup=, augment.cutmix=) with their "
        "class weights, instead of ops x levels",
    )
    p.add_argument("--epoch", type=int, default=0, help="with --mix: the epoch whose first batch to show")
    p.set_defaults(func=cmd_gallery)

    p = sub.add_parser(
        "sweep",
        help="run a grid of training runs (resumable), then write their report",
        epilog=EPILOG_SWEEP,
    )
    _add_config_args(p)
    p.add_argument("--grid", nargs="+", required=True, metavar="key=v1,v2", help="grid axes (any config key, or kd)")
    p.add_argument(
        "--seeds",
        type=_seeds_arg,
        default=None,
        metavar="N | S1,S2",
        help="seeds 0..N-1 per grid point (default 1; 0: the config's seed), or a list of seeds: 2,3 (one: 2,)",
    )
    p.add_argument("--out", required=True, help="sweep folder (runs, logs, sweep.json, report/)")
    p.add_argument("--jobs", type=int, default=1, help="runs at once; each gets cpu_count/jobs threads")
    p.add_argument("--no-report", action="store_true", help="only run; write no report")
    p.add_argument(
        "--cache",
        action="store_true",
        help="KD runs that differ only in KD settings (lambda, K, T, mode, weighting), the student or the optimizer "
        "share one teacher cache, built once in OUT/caches/ (runs without KD never wait for it)",
    )
    p.add_argument(
        "--rerun-changed",
        action="store_true",
        help="start over the runs in OUT that were made with other settings (without it, such a run stops the "
        "sweep before anything runs: it is never reused as done)",
    )
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("report", help="Markdown table and PNG plots over finished runs or sweeps")
    p.add_argument("runs", nargs="+", help="run folders or sweep folders")
    p.add_argument("--out", required=True, help="output folder (report.md, report.json, *.png)")
    p.add_argument("--title", default=None, help="report title")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser(
        "ambiguity",
        help="how augmentation destroys meaning: a teacher's confidence per op and level, table + plot + gallery",
    )
    p.add_argument(
        "--teacher",
        required=True,
        help="a trained augkd checkpoint (best.pt) or its run folder, or timm:NAME / torchvision:NAME with "
        "kd.teacher_weights=FILE|pretrained (and kd.class_map=auto|FILE when its classes are not the data's)",
    )
    p.add_argument("--policy", default="geo-n2-m5", help="policy spec whose ops to measure (e.g. geo-n2-m6)")
    p.add_argument("--data", help="dataset folder or .zip (default: the teacher's own data.root)")
    p.add_argument("--split", choices=["test", "train"], default="test", help="which images (default: held out)")
    p.add_argument("--images", type=int, default=1000, help="how many images (seeded random pick)")
    p.add_argument("--levels", type=float, nargs="+", default=list(range(11)), help="levels to measure")
    p.add_argument("--gallery", type=int, default=16, help="most ambiguous images to show (0: none)")
    p.add_argument("--seed", type=int, default=0, help="seed of the image pick and of the ops' random draws")
    p.add_argument("--out", default="ambiguity", help="output folder")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument(
        "overrides", nargs="*", metavar="key=value", help="config overrides of the data, e.g. data.cache_dir=..."
    )
    p.set_defaults(func=cmd_ambiguity)

    p = sub.add_parser("bench", help="benchmarks against the anchors (torchvision, timm, kornia) as JSON")
    p.add_argument("what", choices=["augment", "data", "kd", "train"], help="what to measure")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--policy", default="ra-n2-m9", help="policy spec (augment)")
    p.add_argument("--model", default="fastnet9", help="student model (kd)")
    p.add_argument("--teacher", default="fastnet9", help="teacher model (kd): augkd's, or timm:NAME / torchvision:NAME")
    p.add_argument(
        "--teacher-size", type=int, default=None, help="the teacher's input size (kd): the 32 px batch is resized to it"
    )
    p.add_argument("--sizes", type=int, nargs="+", default=[32, 224], choices=[32, 224], help="image sizes (augment)")
    p.add_argument("--batch-size", type=int, default=None, help="default: 1024 at 32px, 128 at 224px; 512 data; 256 kd")
    p.add_argument(
        "--repeats", type=int, default=None, help="timed batches (train: rounds) per contender; default 5 (train: 3)"
    )
    p.add_argument("--steps", type=int, default=8, help="training steps per round (train)")
    p.add_argument(
        "--threads", type=int, default=0, help="torch threads (0: torch's default, one per core, waiting passively)"
    )
    p.add_argument("--quick", action="store_true", help="fewer repeats")
    p.add_argument("--json", action="store_true", help="compact JSON on one line")
    p.set_defaults(func=cmd_bench)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    from augkd.checkpoint import CheckpointError
    from augkd.config import ConfigError
    from augkd.experiments.report import ReportError
    from augkd.experiments.sweep import SweepError
    from augkd.io import WriteError
    from augkd.train.build import RunError
    from augkd.train.guard import NonFiniteError

    return (
        CliError,
        ConfigError,
        SweepError,
        ReportError,
        CheckpointError,
        RunError,
        NonFiniteError,
        WriteError,
        ValueError,
        OSError,  # unreadable, read-only, full, a file where a folder belongs, a link loop: named by _one_line
    )


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse ``argv`` with ``key=value`` overrides allowed anywhere after the command (argparse alone takes them
    only before the first option); anything else left over is a usage error under the command's own usage."""
    args, extra = parser.parse_known_args(argv)
    sub: argparse.ArgumentParser = getattr(args, "parser", parser)
    overrides = [a for a in extra if "=" in a and not a.startswith("-")]
    unknown = [a for a in extra if a not in overrides]
    if overrides and not hasattr(args, "overrides"):
        unknown = extra
    if unknown:
        sub.error(f"unrecognized arguments: {' '.join(unknown)}")
    if overrides:
        args.overrides = [*args.overrides, *overrides]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    set_openmp_defaults()  # before any command imports torch
    parser = build_parser()
    args = _parse(parser, argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except KeyboardInterrupt:
        print("augkd: interrupted", file=sys.stderr)
        return 130
    except _user_errors() as exc:
        if args.debug:
            raise
        print(f"augkd {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2


def _one_line(exc: BaseException) -> str:
    """The message of a user-caused failure in one line; an operating-system error names its file and reason
    (``Too many levels of symbolic links: data/a/x.png``) rather than ``[Errno 40] ...``."""
    if isinstance(exc, OSError) and exc.strerror:
        files = [str(f) for f in (exc.filename, exc.filename2) if f is not None and str(f) not in exc.strerror]
        msg = f"{exc.strerror}: {' -> '.join(files)}" if files else exc.strerror
    else:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return msg if len(msg) <= 600 else msg[:597] + "..."  # a message that quotes a damaged file's bytes


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
