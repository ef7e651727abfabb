"""The package's layers only point down: no module imports from a layer above it, lazily or not.

``cli`` > ``experiments``, ``bench`` > ``train`` > ``distill`` > ``data`` > ``augment``, ``models`` > core (``io``,
``checkpoint``, ``config``, ``registry``, ``faults``). Packages of one rank (``experiments`` and ``bench``,
``augment`` and ``models``) do not import each other either; the core modules may use each other. Every import
counts: at the top of a module, inside a function, under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import augkd

SRC = Path(augkd.__file__).parent

#: Rank of each top-level part of the package; a module may import only from its own part or a lower rank.
RANKS: dict[str, int] = {
    "__init__": 0,
    "io": 0,
    "faults": 0,
    "config": 0,
    "checkpoint": 0,
    "registry": 0,
    "digest": 0,
    "lock": 0,
    "augment": 1,
    "models": 1,
    "data": 2,
    "distill": 3,
    "train": 4,
    "experiments": 5,
    "bench": 5,
    "cli": 6,
    "__main__": 7,
}


def _part(module: str) -> str:
    """``augkd.train.loop`` -> ``train``; ``augkd`` -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path, root: Path = SRC) -> list[tuple[int, str]]:
    """``(line, module)`` of every augkd import in a file, relative imports resolved."""
    name = _module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.append((node.lineno, module))
    return [(line, m) for line, m in found if m == "augkd" or m.startswith("augkd.")]


def upward_imports(root: Path = SRC) -> list[str]:
    """One line per import that points up (or sideways between parts of one rank)."""
    bad = []
    for path in sorted(root.rglob("*.py")):
        here = _part(_module_name(path, root))
        for line, module in imports_of(path, root):
            there = _part(module)
            if there == here:
                continue
            if there not in RANKS or here not in RANKS:
                bad.append(f"{path.relative_to(root)}:{line}: {module} (part {there!r} or {here!r} has no rank)")
            elif RANKS[there] > RANKS[here] or (RANKS[there] == RANKS[here] > 0):  # the core is one part
                bad.append(
                    f"{path.relative_to(root)}:{line}: {here} (rank {RANKS[here]}) imports {module} "
                    f"(rank {RANKS[there]})"
                )
    return bad


def test_every_part_of_the_package_has_a_rank():
    parts = {
        p.stem if p.is_file() else p.name for p in SRC.iterdir() if p.suffix == ".py" or (p / "__init__.py").is_file()
    }
    assert parts <= set(RANKS), f"give {sorted(parts - set(RANKS))} a rank in RANKS"


def test_layers_only_point_down():
    bad = upward_imports()
    assert not bad, "imports that point up:\n" + "\n".join(bad)


def test_an_upward_import_is_caught(tmp_path):
    """The check itself: a distill module importing train, even lazily inside a function, is reported."""
    pkg = tmp_path / "augkd"
    (pkg / "distill").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "distill" / "__init__.py").write_text("from . import x\n")
    (pkg / "distill" / "x.py").write_text("def f():\n    from ..train.loop import train\n    return train\n")
    (pkg / "distill" / "y.py").write_text("from augkd.data import DeviceLoader\n")  # pointing down: fine
    bad = upward_imports(pkg)
    assert len(bad) == 1 and "distill/x.py:2: distill (rank 3) imports augkd.train.loop (rank 4)" in bad[0]


@pytest.mark.parametrize("part", ["augment", "models"])
def test_peers_of_one_rank_do_not_import_each_other(part, tmp_path):
    other = "models" if part == "augment" else "augment"
    pkg = tmp_path / "augkd"
    (pkg / part).mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / part / "z.py").write_text(f"import augkd.{other}.x\n")
    assert len(upward_imports(pkg)) == 1
