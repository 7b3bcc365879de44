"""CI metric gate: fresh metrics against a baseline that only moves on purpose, a rule per metric.

``dvc metrics diff`` shows changes but has no thresholds, and exits 0 even when a metrics
file is missing or unreadable. This gate reads per-metric rules (``.ci/metric_rules.yaml``),
compares the metrics in the working tree (a fresh ``dvc repro``) with a baseline, prints a
markdown table that names the baseline, and fails on:

* a drop beyond a rule's ``max_drop`` (absolute, in the rule's worse direction),
* a value under its ``floor`` or over its ``ceiling``,
* a metrics file that is missing or unreadable, on either side,
* a metric that is absent, null, not a number, NaN or infinite, on either side.

The baseline is, by default, the committed file ``.ci/metrics_baseline.json``: the headline
metrics (every file ``dvc.yaml`` declares as ``metrics:``) and every metric a rule reads, as
last landed. It moves only when someone runs ``--update-baseline`` and commits the result, so
a change that commits worse metrics of its own is judged against the old ones, and a change
that moves the baseline shows it in its diff (and the gate prints what moved against the
first parent). ``--baseline-rev REV`` instead reads the metrics files as committed at ``REV``
(``git show REV:path``), e.g. ``HEAD^``, the change's first parent.

Usage::

    python tools/gate.py [--rules .ci/metric_rules.yaml] [--baseline .ci/metrics_baseline.json
        | --baseline-rev REV] [--repo .] [--markdown-out PATH]
    python tools/gate.py --update-baseline    # after `dvc repro`, on purpose; commit the file

CI tooling, not part of the runtime package: it needs only the standard library and PyYAML,
and never imports ``deepfake_detector``, so it judges the pipeline from the outside.

Exit status: 0 when every rule passes (or the baseline was written), 1 when one fails, 2 on a
usage error (unreadable rules or baseline file, unknown revision, not a git repository, a
rule's metric unreadable when updating the baseline).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import yaml

logger = logging.getLogger(__name__)

DEFAULT_RULES = Path(".ci/metric_rules.yaml")
DEFAULT_BASELINE = Path(".ci/metrics_baseline.json")
UPDATE_COMMAND = "python tools/gate.py --update-baseline"
# Absolute slack on comparisons, so that 0.85 - 0.75 counts as a drop of 0.1, not 0.1000...01.
EPS = 1e-9


class GateError(Exception):
    """A usage error: the gate cannot run at all (exit status 2)."""


@dataclass(frozen=True)
class MetricRule:
    """One entry of the rules file.

    Attributes:
        file: Metrics file, relative to the repository root (JSON or YAML).
        key: Dotted path into the file, e.g. ``video.auc``; keys that contain dots
            themselves (``video_at_0.5.auc``) resolve too.
        direction: ``higher`` or ``lower``: which way is better.
        max_drop: Largest allowed change in the worse direction, absolute (0: must not get
            worse at all); None: no comparison with the baseline.
        floor: Smallest allowed current value, if any.
        ceiling: Largest allowed current value, if any.
    """

    file: str
    key: str
    direction: Literal["higher", "lower"] = "higher"
    max_drop: float | None = None
    floor: float | None = None
    ceiling: float | None = None

    def __post_init__(self) -> None:
        if not self.file or not self.key:
            raise ValueError("file and key must be non-empty")
        if self.max_drop is not None and not self.max_drop >= 0:
            raise ValueError(f"max_drop must be >= 0, got {self.max_drop}")
        if self.floor is not None and self.ceiling is not None and self.floor > self.ceiling:
            raise ValueError(f"floor {self.floor} is above ceiling {self.ceiling}")
        if self.max_drop is None and self.floor is None and self.ceiling is None:
            raise ValueError(f"rule for {self.key} checks nothing: give max_drop, floor or ceiling")

    def describe(self) -> str:
        """The rule in a few words, for the table."""
        parts = [f"{self.direction} is better"]
        worse = "drop" if self.direction == "higher" else "rise"
        if self.max_drop is not None:
            parts.append(f"no {worse}" if self.max_drop == 0 else f"{worse} <= {self.max_drop:g}")
        if self.floor is not None:
            parts.append(f">= {self.floor:g}")
        if self.ceiling is not None:
            parts.append(f"<= {self.ceiling:g}")
        return "; ".join(parts)


@dataclass(frozen=True)
class RuleResult:
    """The verdict of one rule.

    Attributes:
        rule: The rule.
        baseline: Baseline value, None when it could not be read.
        current: Current value, None when it could not be read.
        problems: Why it fails; empty when it passes.
    """

    rule: MetricRule
    baseline: float | None
    current: float | None
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """True when the rule passes."""
        return not self.problems

    @property
    def change(self) -> float | None:
        """``current - baseline``, when both are known."""
        if self.baseline is None or self.current is None:
            return None
        return self.current - self.baseline


# A loaded metrics file, or the reason it could not be loaded.
Loaded = tuple[Any, str | None]


def load_rules(path: Path) -> list[MetricRule]:
    """Read and validate the rules file.

    Args:
        path: YAML file with a top-level ``rules:`` list of :class:`MetricRule` mappings.

    Returns:
        The rules, in file order.

    Raises:
        GateError: If the file is missing or malformed, a rule has an unknown key or a bad
            value, or two rules name the same metric.
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise GateError(f"cannot read rules file {path}: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("rules"), list) or not data["rules"]:
        raise GateError(f"{path}: expected a non-empty top-level 'rules:' list")
    rules: list[MetricRule] = []
    for i, entry in enumerate(data["rules"]):
        if not isinstance(entry, dict):
            raise GateError(f"{path}: rules[{i}] must be a mapping, got {entry!r}")
        try:
            rules.append(rule_from_mapping(entry, f"rules[{i}]"))
        except ValueError as exc:
            raise GateError(f"{path}: {exc}") from exc
    seen: set[tuple[str, str]] = set()
    for rule in rules:
        if (rule.file, rule.key) in seen:
            raise GateError(f"{path}: two rules for {rule.file}:{rule.key}")
        seen.add((rule.file, rule.key))
    return rules


def rule_from_mapping(entry: dict[str, Any], where: str) -> MetricRule:
    """Build a :class:`MetricRule` from one YAML mapping, rejecting unknown keys.

    A typo such as ``max_dorp`` must fail loudly instead of leaving a rule that checks less
    than it seems to; the package's own params loader does this for stages, but the gate
    keeps its own few lines so that it never imports the package it judges.

    Args:
        entry: The mapping read from the rules file.
        where: Prefix for messages, e.g. ``rules[3]``.

    Returns:
        The validated rule.

    Raises:
        ValueError: On an unknown or missing key, a value of the wrong type, or a rule that
            fails :class:`MetricRule`'s own validation.
    """
    allowed = sorted(f.name for f in dataclasses.fields(MetricRule))
    unknown = sorted(set(entry) - set(allowed))
    if unknown:
        raise ValueError(
            f"unknown key(s) {', '.join(f'{where}.{k}' for k in unknown)}; allowed: {', '.join(allowed)}"
        )
    kwargs: dict[str, Any] = {}
    for name in ("file", "key"):
        if name not in entry:
            raise ValueError(f"missing required key {where}.{name}")
        if not isinstance(entry[name], str):
            raise ValueError(f"{where}.{name}: expected a string, got {entry[name]!r}")
        kwargs[name] = entry[name]
    if "direction" in entry:
        if entry["direction"] not in ("higher", "lower"):
            raise ValueError(f"{where}.direction: {entry['direction']!r} is not one of ('higher', 'lower')")
        kwargs["direction"] = entry["direction"]
    for name in ("max_drop", "floor", "ceiling"):
        value = entry.get(name)
        if value is None:
            continue
        # bool is an int to Python, but `floor: true` is a mistake, not 1.0.
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where}.{name}: expected a number, got {value!r}")
        kwargs[name] = float(value)
    try:
        return MetricRule(**kwargs)
    except ValueError as exc:  # __post_init__ validation
        raise ValueError(f"{where}: {exc}") from exc


def parse_metrics(text: str, name: str) -> Any:
    """Parse a metrics file's text by its suffix (``.json``, ``.yaml``/``.yml``).

    Raises:
        ValueError: If the text does not parse or the suffix is unsupported.
    """
    suffix = Path(name).suffix.lower()
    try:
        if suffix == ".json":
            return json.loads(text)
        if suffix in (".yaml", ".yml"):
            return yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ValueError(f"not valid {suffix[1:].upper()}: {exc}") from exc
    raise ValueError(f"unsupported metrics format {suffix!r} (use .json or .yaml)")


def read_current(repo: Path, file: str) -> Loaded:
    """Load ``repo/file`` from the working tree.

    Returns:
        ``(data, None)``, or ``(None, reason)`` when missing or unreadable.
    """
    path = repo / file
    if not path.is_file():
        return None, f"{file} is missing from the working tree"
    try:
        return parse_metrics(path.read_text(encoding="utf-8"), file), None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return None, f"{file} is unreadable: {exc}"


def read_baseline(repo: Path, rev: str, file: str) -> Loaded:
    """Load ``file`` as committed at ``rev`` (``git show REV:file``).

    Returns:
        ``(data, None)``, or ``(None, reason)`` when absent at ``rev`` or unreadable.
    """
    proc = subprocess.run(
        ["git", "-C", str(repo), "show", f"{rev}:{file}"], capture_output=True, check=False
    )
    if proc.returncode != 0:
        detail = proc.stderr.decode(errors="replace").strip().splitlines()
        return None, f"{file} is not committed at {rev} ({detail[-1] if detail else 'git show failed'})"
    try:
        return parse_metrics(proc.stdout.decode("utf-8"), file), None
    except (UnicodeDecodeError, ValueError) as exc:
        return None, f"{file} at {rev} is unreadable: {exc}"


def lookup(data: Any, key: str) -> Any:
    """Value at a dotted ``key`` in nested mappings; keys may contain dots themselves.

    At each level the longest run of dotted parts that is a key wins, so
    ``video_at_0.5.auc`` finds ``data["video_at_0.5"]["auc"]``.

    Raises:
        KeyError: If the path does not exist.
    """
    parts = key.split(".")

    def walk(node: Any, rest: list[str]) -> Any:
        if not rest:
            return node
        if isinstance(node, dict):
            for n in range(len(rest), 0, -1):
                head = ".".join(rest[:n])
                if head in node:
                    try:
                        return walk(node[head], rest[n:])
                    except KeyError:
                        continue  # a shorter key may still lead somewhere
        raise KeyError(key)

    return walk(data, parts)


def metric_value(loaded: Loaded, key: str, side: str) -> tuple[float | None, str | None]:
    """A finite number at ``key`` in a loaded file, or the reason there is none.

    Args:
        loaded: ``(data, error)`` from :func:`read_current` / :func:`read_baseline`.
        key: Dotted metric path.
        side: ``baseline`` or ``current``, for messages.
    """
    data, error = loaded
    if error is not None:
        return None, error
    try:
        value = lookup(data, key)
    except KeyError:
        return None, f"{side} has no metric {key}"
    if value is None:
        return None, f"{side} {key} is null"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None, f"{side} {key} is not a number ({value!r})"
    if not math.isfinite(value):
        return None, f"{side} {key} is {value}"
    return float(value), None


def check_rule(rule: MetricRule, baseline: Loaded, current: Loaded) -> RuleResult:
    """Apply one rule to the baseline and current metrics files.

    Returns:
        The verdict; every reason it fails is listed, not only the first.
    """
    problems: list[str] = []
    cur, cur_err = metric_value(current, rule.key, "current")
    base: float | None = None
    if rule.max_drop is not None:
        base, base_err = metric_value(baseline, rule.key, "baseline")
        if base_err:
            problems.append(base_err)
    else:
        # No comparison asked for: show the baseline when there is one, never fail on it.
        base, _ = metric_value(baseline, rule.key, "baseline")
    if cur_err:
        problems.append(cur_err)
    if cur is not None:
        if rule.max_drop is not None and base is not None:
            worse = base - cur if rule.direction == "higher" else cur - base
            if worse > rule.max_drop + EPS:
                word = "dropped" if rule.direction == "higher" else "rose"
                problems.append(f"{word} by {_fmt(worse)}, allowed {rule.max_drop:g}")
        if rule.floor is not None and cur < rule.floor - EPS:
            problems.append(f"below floor {rule.floor:g}")
        if rule.ceiling is not None and cur > rule.ceiling + EPS:
            problems.append(f"above ceiling {rule.ceiling:g}")
    return RuleResult(rule, base, cur, tuple(problems))


@dataclass(frozen=True)
class Baseline:
    """What the current metrics are compared with.

    Attributes:
        name: Short name for the table's column header (the file or the revision).
        about: One line for above the table: what the baseline is and where it came from.
        loader: ``file -> (data, error)`` for the baseline side of :func:`run_gate`.
    """

    name: str
    about: str
    loader: Callable[[str], Loaded]


def rev_baseline(repo: Path, rev: str) -> Baseline:
    """The metrics files as committed at ``rev``.

    Raises:
        GateError: If ``rev`` is not a commit.
    """
    sha = _check_rev(repo, rev)
    return Baseline(rev, f"the metrics files as committed at {rev} ({sha[:10]})",
                    lambda f: read_baseline(repo, rev, f))


def read_baseline_file(path: Path) -> dict[str, Any]:
    """Load and check a baseline file written by :func:`update_baseline`.

    Raises:
        GateError: If it is missing or malformed.
    """
    if not path.is_file():
        raise GateError(f"no baseline file {path}: create it with `{UPDATE_COMMAND}` after `dvc repro` "
                        "(and commit it), or compare with a revision (--baseline-rev HEAD^)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GateError(f"cannot read baseline file {path}: {exc}") from exc
    metrics = data.get("metrics") if isinstance(data, dict) else None
    if not isinstance(metrics, dict) or not all(isinstance(v, dict) for v in metrics.values()):
        raise GateError(f"{path}: expected a 'metrics' mapping of file -> {{key: value}}")
    return data


def file_baseline(repo: Path, path: Path) -> Baseline:
    """The committed baseline file (``.ci/metrics_baseline.json``).

    Raises:
        GateError: If it is missing or malformed.
    """
    data = read_baseline_file(path)
    where = _relative(repo, path)

    def load(file: str) -> Loaded:
        if file not in data["metrics"]:
            return None, f"{file} is not in the baseline {where} (run `{UPDATE_COMMAND}`)"
        return data["metrics"][file], None

    measured = data.get("measured_on_top_of") or "an unknown commit"
    return Baseline(where, f"{where} (committed; measured on top of {measured}; moves only with "
                           f"`{UPDATE_COMMAND}`)", load)


def declared_metrics(repo: Path) -> list[str]:
    """The files ``dvc.yaml`` declares as ``metrics:`` (stages' and top-level), in file order.

    Returns:
        Paths relative to the repository root; empty when there is no ``dvc.yaml``.

    Raises:
        GateError: If ``dvc.yaml`` cannot be parsed.
    """
    path = repo / "dvc.yaml"
    if not path.is_file():
        return []
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise GateError(f"cannot read {path}: {exc}") from exc
    entries = list(data.get("metrics") or [])
    for stage in (data.get("stages") or {}).values():
        entries += list((stage or {}).get("metrics") or [])
    # An entry is a path, or a one-key mapping {path: {cache: false, ...}}.
    files = [e if isinstance(e, str) else next(iter(e)) for e in entries if isinstance(e, (str, dict)) and e]
    return list(dict.fromkeys(files))


def flatten(data: Any, prefix: str = "") -> dict[str, float]:
    """The finite numbers in nested mappings, by dotted key (strings, nulls and lists left out)."""
    out: dict[str, float] = {}
    if isinstance(data, dict):
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(data, (int, float)) and not isinstance(data, bool) and math.isfinite(data):
        out[prefix] = data
    return out


def baseline_values(repo: Path, rules: Sequence[MetricRule]) -> dict[str, dict[str, float]]:
    """What a baseline file holds: the working tree's headline metrics and every rule's metric.

    Raises:
        GateError: If a rule's metric (or its file) cannot be read as a finite number: a
            baseline without it would fail every later gate.
    """
    values: dict[str, dict[str, float]] = {}
    for file in declared_metrics(repo):
        data, error = read_current(repo, file)
        if error is None:
            values[file] = flatten(data)
    for rule in rules:
        loaded = read_current(repo, rule.file)
        _, error = metric_value(loaded, rule.key, "current")
        if error is not None:
            raise GateError(f"cannot update the baseline: {error}")
        values.setdefault(rule.file, {})[rule.key] = lookup(loaded[0], rule.key)  # as written: 18 stays an int
    return {file: dict(sorted(keys.items())) for file, keys in values.items()}


def baseline_changes(old: dict[str, dict[str, Any]], new: dict[str, dict[str, Any]]) -> list[str]:
    """One line per metric that differs between two baselines' ``metrics`` mappings."""
    lines = []
    for file in sorted(set(old) | set(new)):
        before, after = old.get(file, {}), new.get(file, {})
        for key in sorted(set(before) | set(after)):
            if before.get(key) != after.get(key):
                lines.append(f"{file}: {key}: {_fmt_any(before.get(key))} -> {_fmt_any(after.get(key))}")
    return lines


def update_baseline(repo: Path, path: Path, rules: Sequence[MetricRule]) -> list[str]:
    """Write the working tree's metrics into the baseline file.

    Args:
        repo: Repository root.
        path: Baseline file to (re)write.
        rules: The gate's rules (their metrics must be readable).

    Returns:
        What changed, one line per metric (every metric for a new file).

    Raises:
        GateError: See :func:`baseline_values`.
    """
    values = baseline_values(repo, rules)
    old: dict[str, dict[str, Any]] = {}
    if path.is_file():
        try:
            old = read_baseline_file(path)["metrics"]
        except GateError:
            old = {}  # a broken file is replaced
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short=10", "HEAD"], capture_output=True, text=True,
                          check=False).stdout.strip()
    payload = {
        "about": (f"Baseline of the CI metric gate (tools/gate.py): the headline metrics and every metric a rule "
                  f"reads, as last landed. Moves only with `{UPDATE_COMMAND}` (after `dvc repro`), committed on "
                  "purpose; see docs/team.md, 'What CI checks'."),
        "measured_on_top_of": head or None,
        "metrics": values,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
    return baseline_changes(old, values)


def moved_since(repo: Path, path: Path, rev: str = "HEAD^") -> list[str]:
    """How the baseline file differs from its copy at ``rev`` (the change's first parent).

    Returns:
        One line per metric moved; empty when unchanged, or when ``rev`` or its copy is absent.
    """
    rel = _relative(repo, path)
    proc = subprocess.run(["git", "-C", str(repo), "show", f"{rev}:{rel}"], capture_output=True, check=False)
    if proc.returncode != 0:
        return []
    try:
        old = json.loads(proc.stdout.decode("utf-8")).get("metrics") or {}
        new = read_baseline_file(path)["metrics"]
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError, GateError):
        return []
    return baseline_changes(old, new)


def run_gate(
    rules: Sequence[MetricRule],
    baseline_loader: Callable[[str], Loaded],
    current_loader: Callable[[str], Loaded],
) -> list[RuleResult]:
    """Check every rule, loading each metrics file once per side.

    Args:
        rules: The rules.
        baseline_loader: ``file -> (data, error)`` for the baseline side.
        current_loader: ``file -> (data, error)`` for the current side.

    Returns:
        One result per rule, in rule order.
    """
    baselines: dict[str, Loaded] = {}
    currents: dict[str, Loaded] = {}
    results = []
    for rule in rules:
        if rule.file not in baselines:
            baselines[rule.file] = baseline_loader(rule.file)
            currents[rule.file] = current_loader(rule.file)
        results.append(check_rule(rule, baselines[rule.file], currents[rule.file]))
    return results


def to_markdown(results: Sequence[RuleResult], baseline_name: str, about: str | None = None,
                moved: Sequence[str] = ()) -> str:
    """The results as a markdown table, with a verdict line and the baseline above it.

    Args:
        results: From :func:`run_gate`.
        baseline_name: How to name the baseline (e.g. ``HEAD``) in the header.
        about: What the baseline is, for the line above the table (default: its name).
        moved: Lines from :func:`moved_since`: this change moves the baseline.
    """
    failed = sum(not r.ok for r in results)
    several_files = len({r.rule.file for r in results}) > 1
    verdict = (
        f"**Metric gate: FAILED** ({failed} of {len(results)} rules)"
        if failed
        else f"**Metric gate: passed** ({len(results)} rules)"
    )
    lines = [verdict, "", f"Baseline: {about or baseline_name}", ""]
    if moved:
        lines += [f"This change moves the baseline (against its first parent, HEAD^): {len(moved)} metric(s):", ""]
        lines += [f"- {line}" for line in moved] + [""]
    lines += [
        f"| metric | baseline ({_cell(baseline_name)}) | current | change | rule | status |",
        "|---|---:|---:|---:|---|---|",
    ]
    for r in results:
        name = f"{r.rule.file}: {r.rule.key}" if several_files else r.rule.key
        status = "pass" if r.ok else "**FAIL**: " + "; ".join(r.problems)
        change = "" if r.change is None else _fmt(r.change, signed=True)
        lines.append(
            f"| {_cell(name)} | {_fmt(r.baseline)} | {_fmt(r.current)} | {change} "
            f"| {_cell(r.rule.describe())} | {_cell(status)} |"
        )
    return "\n".join(lines) + "\n"


def _fmt(x: float | None, signed: bool = False) -> str:
    if x is None:
        return "n/a"
    if float(x).is_integer() and abs(x) < 1e12:
        return f"{int(x):+d}" if signed else str(int(x))
    return f"{x:+.4f}" if signed else f"{x:.4f}"


def _fmt_any(x: Any) -> str:
    if x is None:
        return "absent"
    return _fmt(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else repr(x)


def _relative(repo: Path, path: Path) -> str:
    try:
        return path.resolve().relative_to(repo.resolve()).as_posix()
    except ValueError:
        return str(path)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _git_toplevel(path: Path) -> Path:
    proc = subprocess.run(
        ["git", "-C", str(path), "rev-parse", "--show-toplevel"], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise GateError(f"{path} is not inside a git repository: {proc.stderr.strip()}")
    return Path(proc.stdout.strip())


def _check_rev(repo: Path, rev: str) -> str:
    """The commit ``rev`` names (full hash).

    Raises:
        GateError: If it names no commit.
    """
    proc = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"],
        capture_output=True, text=True, check=False,
    )
    if proc.returncode != 0:
        raise GateError(f"baseline revision {rev!r} is not a commit in {repo}")
    return proc.stdout.strip()


def setup_logging(level: str | None = None) -> None:
    """Configure root logging like the package's entry points do (same format, same env var).

    Args:
        level: Log level name; defaults to ``$DFD_LOG_LEVEL`` or ``INFO``.
    """
    level = level or os.environ.get("DFD_LOG_LEVEL", "INFO")
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the gate from the command line.

    Args:
        argv: Arguments (default: ``sys.argv[1:]``).

    Returns:
        0 when every rule passes, 1 when one fails, 2 on a usage error.
    """
    ap = argparse.ArgumentParser(prog="python tools/gate.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--rules", type=Path, default=DEFAULT_RULES, help="rules file, relative to --repo unless absolute")
    ap.add_argument("--baseline", type=Path, default=DEFAULT_BASELINE,
                    help="committed baseline file, relative to --repo unless absolute (default: %(default)s)")
    ap.add_argument("--baseline-rev", default=None,
                    help="compare with the metrics files as committed at this git revision instead (e.g. HEAD^)")
    ap.add_argument("--update-baseline", action="store_true",
                    help="write the working tree's metrics into --baseline (after `dvc repro`; commit it) and exit")
    ap.add_argument("--repo", type=Path, default=Path("."), help="inside the git repository (its root is used)")
    ap.add_argument("--markdown-out", type=Path, help="also append the table to this file (e.g. $GITHUB_STEP_SUMMARY)")
    args = ap.parse_args(argv)
    if args.update_baseline and args.baseline_rev:
        ap.error("--update-baseline writes --baseline; it takes no --baseline-rev")
    setup_logging()
    try:
        repo = _git_toplevel(args.repo)
        rules = load_rules(args.rules if args.rules.is_absolute() else repo / args.rules)
        baseline_path = args.baseline if args.baseline.is_absolute() else repo / args.baseline
        if args.update_baseline:
            changes = update_baseline(repo, baseline_path, rules)
            print(f"{_relative(repo, baseline_path)}: {len(changes)} metric(s) changed" + "".join(
                f"\n  {line}" for line in changes), flush=True)
            logger.info("baseline written: review the changes above and commit %s", _relative(repo, baseline_path))
            return 0
        if args.baseline_rev is not None:
            baseline, moved = rev_baseline(repo, args.baseline_rev), []
        else:
            baseline, moved = file_baseline(repo, baseline_path), moved_since(repo, baseline_path)
    except GateError as exc:
        logger.error("%s", exc)
        return 2
    results = run_gate(rules, baseline_loader=baseline.loader, current_loader=lambda f: read_current(repo, f))
    table = to_markdown(results, baseline.name, baseline.about, moved)
    print(table, end="", flush=True)
    if args.markdown_out is not None:
        with args.markdown_out.open("a", encoding="utf-8") as fh:
            fh.write(table)
    failed = [r for r in results if not r.ok]
    if failed:
        logger.error(
            "metric gate failed: %d of %d rules against %s (%s)", len(failed), len(results), baseline.name,
            ", ".join(f"{r.rule.key}: {'; '.join(r.problems)}" for r in failed),
        )
        return 1
    logger.info("metric gate passed: %d rules against %s", len(results), baseline.name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
