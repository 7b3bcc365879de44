"""Typed, validated access to ``params.yaml``.

Every stage declares its params as a frozen dataclass and loads them once with
:func:`load_section`. Unknown keys are errors (with the key's name), and so are unknown
top-level sections (:data:`SECTIONS` lists the ones the project reads), checked whichever
stage reads the file: a typo in ``params.yaml`` never silently falls back to a default.
A file that is not UTF-8 or not valid YAML is reported with its name and the line.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Callable, TypeVar

import yaml

from .errors import InputError

T = TypeVar("T")


class ConfigError(InputError):
    """Raised when params do not match the dataclass that declares them."""


# Every top-level section of params.yaml the project reads (one per stage that has params;
# calibrate also reads extract_frames and crop_faces). Any other top-level key is an error.
SECTIONS = ("sample", "ingest", "extract_frames", "crop_faces", "autoencoder", "train", "calibrate", "predict_videos", "gradcam")


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe YAML loader that refuses a key given twice in one mapping (YAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in one mapping", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


# Scalar types: (accepts the value?, what was expected, for the message). bool is an int in
# Python, so it is refused explicitly where a number is wanted.
_SCALARS: dict[type, tuple[Callable[[Any], bool], str]] = {
    float: (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number"),
    int: (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    bool: (lambda v: isinstance(v, bool), "true/false"),
    str: (lambda v: isinstance(v, str), "a string"),
}


def _convert_union(tp: Any, value: Any, where: str) -> Any:
    args = typing.get_args(tp)
    if value is None and type(None) in args:
        return None
    errors = []
    for arg in args:
        if arg is type(None):
            continue
        try:
            return _convert(arg, value, where)
        except ConfigError as exc:
            errors.append(str(exc))
    raise ConfigError(f"{where}: {value!r} matches none of {args}: {errors}")


def _convert_tuple(tp: Any, value: Any, where: str) -> tuple:
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{where}: expected a list, got {value!r}")
    args = typing.get_args(tp)
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
    if len(args) != len(value):
        raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
    return tuple(_convert(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))


def _convert(tp: Any, value: Any, where: str) -> Any:
    """Convert ``value`` to the annotated type ``tp`` (dataclasses, tuples, optionals, literals, scalars)."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_mapping(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        return _convert_union(tp, value, where)
    if origin is tuple:
        return _convert_tuple(tp, value, where)
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{where}: {value!r} is not one of {allowed}")
        return value
    if tp in _SCALARS:
        accepts, expected = _SCALARS[tp]
        if not accepts(value):
            raise ConfigError(f"{where}: expected {expected}, got {value!r}")
        return float(value) if tp is float else value
    return value


def from_mapping(cls: type[T], data: dict[str, Any], where: str = "") -> T:
    """Build the frozen dataclass ``cls`` from a mapping, rejecting unknown keys.

    Args:
        cls: A dataclass type whose fields declare the allowed keys and their types.
        data: The mapping read from YAML.
        where: Dotted prefix used in error messages (e.g. ``"crop_faces"``).

    Returns:
        An instance of ``cls``. A field without a default must be in ``data``: the params
        sections' dataclasses have none, so params.yaml holds every key, the one source of
        each setting.

    Raises:
        ConfigError: On an unknown key, a missing required key or a wrong type.
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(f'{where}.{k}'.lstrip('.') for k in unknown)}; "
            f"allowed: {', '.join(sorted(fields))}"
        )
    kwargs = {}
    for name, f in fields.items():
        key = f"{where}.{name}".lstrip(".")
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], key)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing key {key} (every key of the section must be set)")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:  # __post_init__ validation
        raise ConfigError(f"{where}: {exc}") from exc


def read_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    """Read and check a params YAML file (empty file -> empty dict).

    Every top-level key must be one of :data:`SECTIONS` and every section a mapping (or
    empty), whichever section the caller wants: a misspelt ``crop_face:`` is an error even
    for a stage that reads only ``extract_frames``.

    Raises:
        ConfigError: Naming the file (and the line, for YAML errors) when it is missing,
            unreadable, not UTF-8, not YAML, or has an unknown or malformed section.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"params file not found: {path}")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}: not UTF-8 text (byte 0x{raw[exc.start]:02x} on line {line}); save it as UTF-8") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(f"{path}: not valid YAML ({where}{getattr(exc, 'problem', None) or exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections ({', '.join(SECTIONS)})")
    for key, value in data.items():
        if key not in SECTIONS:
            close = difflib.get_close_matches(str(key), SECTIONS, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"{path}: unknown section {key!r}{hint}; known sections: {', '.join(SECTIONS)}")
        if value is not None and not isinstance(value, dict):
            raise ConfigError(f"{path}: section {key} must be a mapping of keys, got {value!r}")
    return data


def load_section(cls: type[T], section: str, path: str | Path = "params.yaml") -> T:
    """Load one top-level section of ``params.yaml`` into ``cls``.

    Args:
        cls: Frozen dataclass describing the section.
        section: Top-level key, e.g. ``"crop_faces"``.
        path: The params file.

    Returns:
        The validated params.

    Raises:
        ConfigError: See :func:`read_params`; or a key of the section is unknown, missing
            or breaks its rule (the message names the file and the key).
        ValueError: If ``section`` is not one of :data:`SECTIONS` (a programming error).
    """
    if section not in SECTIONS:
        raise ValueError(f"{section!r} is not a params section; add it to config.SECTIONS")
    data = read_params(path)
    try:
        return from_mapping(cls, data.get(section) or {}, section)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def to_dict(obj: Any) -> dict[str, Any]:
    """Plain-dict view of a params dataclass (tuples become lists), for checkpoints and logs."""

    def plain(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(obj))
