"""Check that each DVC stage's ``deps`` cover the package modules its command imports.

DVC reruns a stage only when one of its declared ``deps`` changes. A stage that runs
``python -m deepfake_detector.stages.train`` executes every module that entry point
imports, directly or through other modules; a module missing from ``deps`` can change the
stage's results without DVC noticing, and ``dvc.lock`` then vouches for outputs that the
code in the commit would not produce.

This tool derives each stage's import closure from the source, with :mod:`ast` (the code
is never imported or run), and reports:

* every module file of the closure that no ``deps`` entry covers (a directory entry covers
  the files below it);
* every ``deps`` entry under the source tree (``src/``) that does not exist any more, which
  ``dvc repro`` would fail on.

What counts as an import, inside the package only (third-party imports are ignored):
``import deepfake_detector.x``, ``from deepfake_detector.x import y`` (``y`` too when it is
a submodule), relative imports (``from .x import y``, ``from .. import x``), imports inside
functions, ``importlib.import_module("deepfake_detector.x")`` with a string literal (or a
module-level constant holding one), and the ``__init__.py`` of every package on the way to
an imported module, which Python runs first. Imports under ``if TYPE_CHECKING:`` are not
run, so they do not count.

A stage is checked when its ``cmd`` names a module of the package: ``python -m
deepfake_detector.stages.train``, ``python -c "import deepfake_detector.x"`` or a path such
as ``src/deepfake_detector/stages/train.py``.

Usage::

    python tools/dvc_deps.py [--dvc-yaml dvc.yaml] [--repo .] [--package deepfake_detector]

Exit status: 0 when every stage's deps are complete, 1 when a module is missing or a
source dep does not exist, 2 on a usage error (no dvc.yaml, package not found).
"""

from __future__ import annotations

import argparse
import ast
import logging
import posixpath
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import yaml

logger = logging.getLogger(__name__)

PACKAGE = "deepfake_detector"
# Where a package's directory may live, relative to the repository (src layout first).
SOURCE_ROOTS = ("src", ".")


class DepsError(Exception):
    """A usage error: the check cannot run (exit status 2)."""


@dataclass
class PackageIndex:
    """Maps dotted module names of one package to files, and parses each file once.

    Attributes:
        name: Top-level package name, e.g. ``deepfake_detector``.
        directory: The package's directory (holding its ``__init__.py``).
        repo: Repository root; reported paths are relative to it.
    """

    name: str
    directory: Path
    repo: Path
    _imports: dict[str, set[tuple[str, bool]]] = field(default_factory=dict, repr=False)

    @classmethod
    def find(cls, repo: Path, name: str = PACKAGE) -> PackageIndex:
        """Locate package ``name`` in ``repo`` (``src/NAME`` or ``NAME``).

        Raises:
            DepsError: If neither holds an ``__init__.py``.
        """
        repo = Path(repo).resolve()
        for root in SOURCE_ROOTS:
            directory = (repo / root / name).resolve()
            if (directory / "__init__.py").is_file():
                return cls(name, directory, repo)
        raise DepsError(f"package {name} not found in {repo} (looked in {', '.join(SOURCE_ROOTS)})")

    @property
    def source_root(self) -> str:
        """Repo-relative folder whose deps entries must exist (``src`` in a src layout)."""
        parent = self.directory.parent
        return self.relative(parent if parent != self.repo else self.directory)

    def relative(self, path: Path) -> str:
        """``path`` relative to the repository, with forward slashes."""
        return path.relative_to(self.repo).as_posix()

    def in_package(self, module: str) -> bool:
        """True when dotted ``module`` is the package or below it."""
        return module == self.name or module.startswith(self.name + ".")

    def file_of(self, module: str) -> Path | None:
        """The source file of dotted ``module`` (``x.py`` or ``x/__init__.py``), if any."""
        if not self.in_package(module):
            return None
        base = self.directory.joinpath(*module.split(".")[1:])
        for candidate in (base / "__init__.py", base.with_suffix(".py") if base != self.directory else None):
            if candidate is not None and candidate.is_file():
                return candidate
        return None

    def is_package(self, module: str) -> bool:
        """True when dotted ``module`` is a package (a folder with ``__init__.py``)."""
        path = self.file_of(module)
        return path is not None and path.name == "__init__.py"

    def imports_of(self, module: str) -> set[tuple[str, bool]]:
        """Package-internal names that ``module``'s source imports.

        Returns:
            ``(dotted name, certain)`` pairs: ``certain`` is False for the ``y`` of ``from x
            import y``, which may be a submodule or just an attribute of ``x``.
        """
        if module not in self._imports:
            path = self.file_of(module)
            found: set[tuple[str, bool]] = set()
            if path is not None:
                try:
                    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
                except (OSError, SyntaxError, UnicodeDecodeError) as exc:
                    logger.warning("cannot parse %s: %s", path, exc)
                else:
                    found = {
                        (name, certain)
                        for name, certain in _ImportCollector(module, self.is_package(module)).collect(tree)
                        if self.in_package(name)
                    }
            self._imports[module] = found
        return self._imports[module]

    def closure(self, entry_modules: Sequence[str]) -> set[Path]:
        """Every file of the package that running ``entry_modules`` can execute.

        Args:
            entry_modules: Dotted names, e.g. ``["deepfake_detector.stages.train"]``.

        Returns:
            Absolute file paths: the modules, what they import, transitively, and the
            ``__init__.py`` of every package on the way (Python runs those first).
        """
        files: set[Path] = set()
        seen: set[str] = set()
        todo = [(m, True) for m in entry_modules]
        # `python -m pkg.sub` on a package runs pkg/sub/__main__.py.
        todo += [(f"{m}.__main__", False) for m in entry_modules if self.is_package(m)]
        while todo:
            module, certain = todo.pop()
            if module in seen:
                continue
            path = self.file_of(module)
            if path is None:
                if certain:
                    logger.warning("%s is imported but has no source file in %s", module, self.directory)
                continue
            parts = module.split(".")
            for i in range(1, len(parts) + 1):
                name = ".".join(parts[:i])
                if name in seen:
                    continue
                seen.add(name)
                found = self.file_of(name)
                if found is not None:
                    files.add(found)
                    todo.extend(self.imports_of(name))
        return files


class _ImportCollector(ast.NodeVisitor):
    """Collects absolute module names imported anywhere in one module's syntax tree."""

    def __init__(self, module: str, is_package: bool) -> None:
        self.module = module
        # What `from . import x` is relative to: the package itself for an __init__.py.
        self.package = module if is_package else module.rpartition(".")[0]
        self.found: list[tuple[str, bool]] = []
        self.constants: dict[str, str] = {}

    def collect(self, tree: ast.Module) -> list[tuple[str, bool]]:
        # Module-level string constants, so that `import_module(EXPLAIN_MODULE)` resolves.
        for node in tree.body:
            if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(node.value, ast.Constant):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    if isinstance(target, ast.Name) and isinstance(node.value.value, str):
                        self.constants[target.id] = node.value.value
        self.visit(tree)
        return self.found

    def resolve(self, name: str, level: int, package: str | None = None) -> str | None:
        """Absolute name of ``name`` imported with ``level`` leading dots."""
        if level == 0:
            return name
        base = (package if package is not None else self.package).split(".")
        if level - 1 >= len(base) or not base[0]:
            logger.warning("relative import beyond the top of %s in %s", self.package, self.module)
            return None
        base = base[: len(base) - (level - 1)]
        return ".".join(base + ([name] if name else []))

    def visit_If(self, node: ast.If) -> None:
        # `if TYPE_CHECKING:` bodies never run; only their `else:` does.
        test = node.test
        if (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
            isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
        ):
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.found.append((alias.name, True))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = self.resolve(node.module or "", node.level)
        if base is None:
            return
        self.found.append((base, True))
        for alias in node.names:
            if alias.name != "*":
                self.found.append((f"{base}.{alias.name}", False))

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
        if name in ("import_module", "__import__") and node.args:
            target = self._string(node.args[0])
            if target is not None:
                package = next((self._string(k.value) for k in node.keywords if k.arg == "package"), None)
                level = len(target) - len(target.lstrip("."))
                resolved = self.resolve(target[level:], level, package)
                if resolved is not None:
                    self.found.append((resolved, True))
        self.generic_visit(node)

    def _string(self, node: ast.expr) -> str | None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        if isinstance(node, ast.Name):
            return self.constants.get(node.id)
        return None


def _stage_bodies(dvc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(name, definition)`` of each stage; a ``foreach``/``matrix`` stage yields its template."""
    for name, stage in (dvc.get("stages") or {}).items():
        if not isinstance(stage, dict):
            continue
        if "foreach" in stage or "matrix" in stage:
            # Only literal deps of the template are compared; ${item} paths are not expanded.
            logger.warning("stage %s is templated: checking its template's literal deps only", name)
            stage = stage.get("do", stage)
        yield name, stage


def cmd_modules(cmd: str | Sequence[str], package: str = PACKAGE) -> list[str]:
    """Dotted names of the package's modules that a stage command names.

    Args:
        cmd: The stage's ``cmd`` (a string or a list of commands).
        package: Top-level package name.

    Returns:
        Sorted dotted names, e.g. ``["deepfake_detector.stages.train"]``.
    """
    text = cmd if isinstance(cmd, str) else "\n".join(str(c) for c in cmd)
    pkg = re.escape(package)
    found = set()
    # `-m pkg.x.y`, `import pkg.x`, `from pkg.x import y`: not part of a path, not followed by `/`.
    for match in re.finditer(rf"(?<![\w./-]){pkg}(?:\.[A-Za-z_]\w*)*(?![\w/])", text):
        found.add(match.group(0))
    # `python src/pkg/x/y.py`: the file of module pkg.x.y.
    for match in re.finditer(rf"(?<![\w.-]){pkg}((?:/[A-Za-z_]\w*)+)\.py\b", text):
        found.add(package + match.group(1).replace("/", "."))
    return sorted(found)


def _deps_of(stage: dict[str, Any], base: str = ".") -> list[str]:
    """The stage's deps as normalized repo-relative paths (``./a/b/`` -> ``a/b``).

    Args:
        stage: The stage's body.
        base: Repo-relative folder of its dvc.yaml: deps are relative to it (and to the
            stage's ``wdir`` below it), as DVC reads them.
    """
    base = posixpath.join(base, str(stage.get("wdir") or "."))
    out = []
    for dep in stage.get("deps") or []:
        for path in [dep] if isinstance(dep, str) else list(dep) if isinstance(dep, dict) else []:
            out.append(posixpath.normpath(posixpath.join(base, str(path))))
    return out


def _base(dvc_yaml: Path, repo: Path) -> str:
    """The repo-relative folder of a dvc.yaml (``.`` for the top-level one)."""
    return Path(dvc_yaml).resolve().parent.relative_to(Path(repo).resolve()).as_posix() or "."


def _covered(path: str, deps: Sequence[str]) -> bool:
    return any(path == dep or path.startswith(dep.rstrip("/") + "/") or dep == "." for dep in deps)


def _load(dvc_yaml: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(Path(dvc_yaml).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise DepsError(f"cannot read {dvc_yaml}: {exc}") from exc
    if not isinstance(data, dict):
        raise DepsError(f"{dvc_yaml}: top level must be a mapping")
    return data


def missing_deps(dvc_yaml: Path, repo: Path, package: str = PACKAGE) -> dict[str, list[str]]:
    """Modules each stage runs but does not list in its ``deps``.

    Args:
        dvc_yaml: The pipeline file.
        repo: Repository root (deps paths and reported paths are relative to it).
        package: Top-level package whose modules must be declared.

    Returns:
        Stage name -> sorted repo-relative paths of module files in the import closure of
        the stage's command that no deps entry covers. Stages with nothing missing, and
        stages whose command runs no module of the package, are left out.

    Raises:
        DepsError: If dvc.yaml cannot be read or the package is not in ``repo``.
    """
    dvc = _load(dvc_yaml)
    index = PackageIndex.find(repo, package)
    base = _base(dvc_yaml, repo)
    result: dict[str, list[str]] = {}
    for name, stage in _stage_bodies(dvc):
        modules = cmd_modules(stage.get("cmd") or "", package)
        if not modules:
            continue
        deps = _deps_of(stage, base)
        missing = sorted(
            rel for rel in (index.relative(p) for p in index.closure(modules)) if not _covered(rel, deps)
        )
        if missing:
            result[name] = missing
    return result


def stale_deps(dvc_yaml: Path, repo: Path, package: str = PACKAGE) -> dict[str, list[str]]:
    """Deps entries under the source tree (``src/``) that do not exist.

    A module renamed or moved leaves its old path in ``deps``; ``dvc repro`` then fails
    with a missing dependency, so this is reported next to the missing modules.

    Args:
        dvc_yaml: The pipeline file.
        repo: Repository root.
        package: Top-level package (its folder's parent is the source tree).

    Returns:
        Stage name -> sorted deps entries that name nothing; stages without any left out.
    """
    dvc = _load(dvc_yaml)
    index = PackageIndex.find(repo, package)
    root = index.source_root
    base = _base(dvc_yaml, repo)
    result: dict[str, list[str]] = {}
    for name, stage in _stage_bodies(dvc):
        gone = sorted(
            dep for dep in _deps_of(stage, base)
            if _covered(dep, [root]) and "${" not in dep and not (index.repo / dep).exists()
        )
        if gone:
            result[name] = gone
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Run the check from the command line and print what is missing.

    Args:
        argv: Arguments (default: ``sys.argv[1:]``).

    Returns:
        0 when every stage's deps are complete, 1 when not, 2 on a usage error.
    """
    ap = argparse.ArgumentParser(prog="python tools/dvc_deps.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--dvc-yaml", type=Path, default=Path("dvc.yaml"), help="pipeline file, relative to --repo unless absolute")
    ap.add_argument("--repo", type=Path, default=Path("."), help="repository root")
    ap.add_argument("--package", default=PACKAGE, help="top-level package whose modules must be declared")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    dvc_yaml = args.dvc_yaml if args.dvc_yaml.is_absolute() else args.repo / args.dvc_yaml
    try:
        missing = missing_deps(dvc_yaml, args.repo, args.package)
        stale = stale_deps(dvc_yaml, args.repo, args.package)
    except DepsError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 2
    for name, paths in missing.items():
        print(f"{name}: deps miss {len(paths)} module(s) its command imports:")
        print("".join(f"  - {p}\n" for p in paths), end="")
    for name, paths in stale.items():
        print(f"{name}: deps name source file(s) that do not exist:")
        print("".join(f"  - {p}\n" for p in paths), end="")
    if missing or stale:
        print(f"Fix: list the missing modules under the stage's deps in {args.dvc_yaml} "
              "(or a folder that holds them) and drop the entries that no longer exist.")
        return 1
    print(f"{args.dvc_yaml}: every stage's deps cover the package modules its command imports.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
