"""Keep typer's option parsing off pydantic for msgsend's plain option types (start-up time).

typer 0.2x coerces every non-flag option through a pydantic ``TypeAdapter``, given or not: the
first one imports pydantic (120-190 ms on the benchmark machine, about what ``import requests``
costs) and each builds an adapter. That alone put ``msgsend ping`` over its start-up budget
(docs/benchmarks.md). msgsend's options are plain ``str``, ``int``, ``float`` (some with
``min``/``max``), ``Path``, flags and repeatable ``list[str]``; for an ordinary value of those
(``"8"``, ``"0.5"``, a path, ``True``, ``("0000", "9")``) this module returns what typer's
adapter returns, and hands everything else to typer unchanged: other annotations (other
lists, enums, ...), options with a parser, clamping or path checks, and any value it is not
sure about (``" 8"``, ``"1e3"`` for an int, out of range, ...), so that typer produces the
same result or the same error message as without it.

``install()`` is called by ``msgsend.cli``. When typer's internals are not what this expects
(an older typer that does not use pydantic, or a newer one that changed them), it installs
nothing and typer works as usual.

``install_plain_help()`` (also called by ``msgsend.cli``) makes ``--help`` list an option's
value the way click does (``--concurrency INTEGER``, ``--results PATH``) and flags with no
type at all, where typer 0.29 writes ``<bool>``, ``<int range>`` or ``<str>`` beside every
option. Both patch private typer names: pyproject.toml pins typer to the minor tested.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["install", "install_plain_help"]

_INT = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_PLAIN = (str, int, float, Path, bool, list[str])
#: typer's defaults for the path options: with any other value typer checks the path itself
_PATH_DEFAULTS = {
    "exists": False,
    "file_okay": True,
    "dir_okay": True,
    "writable": False,
    "readable": True,
    "resolve_path": False,
    "allow_dash": False,
    "path_type": None,
}
_SLOW = object()


def _fast(annotation: Any, info: Any, value: Any) -> Any:
    """Return the coerced value, or ``_SLOW`` when typer should decide."""
    if annotation is str:
        return value if isinstance(value, str) else _SLOW
    if annotation == list[str]:  # a repeatable option: click hands over a tuple of strings
        if isinstance(value, list | tuple) and all(isinstance(item, str) for item in value):
            return list(value)
        return _SLOW
    if annotation is bool:  # typer skips flags already True/False; this is for the others
        return value if isinstance(value, bool) else _SLOW
    if annotation is Path:
        if isinstance(value, str) and value:
            return Path(value)
        return value if isinstance(value, Path) else _SLOW
    if annotation is int:
        if type(value) is int:
            number: Any = value
        elif isinstance(value, str) and _INT.fullmatch(value):
            number = int(value)
        else:
            return _SLOW
    elif type(value) in (int, float) or (isinstance(value, str) and _FLOAT.fullmatch(value)):
        number = float(value)  # annotation is float
    else:
        return _SLOW
    if number != number or number in (float("inf"), float("-inf")):
        return _SLOW
    if info.min is not None and number < info.min:
        return _SLOW  # out of range: typer raises its own "Input should be ..." message
    if info.max is not None and number > info.max:
        return _SLOW
    return number


def _plain(descriptor: Any) -> bool:
    """Whether ``descriptor`` is an option this module may coerce."""
    info = descriptor.parameter_info
    if descriptor.annotation not in _PLAIN or descriptor.file_annotation is not None:
        return False
    if info.parser is not None or getattr(info, "click_type", None) is not None or info.clamp:
        return False
    if descriptor.annotation is Path:
        return all(
            getattr(info, name, default) == default for name, default in _PATH_DEFAULTS.items()
        )
    return True


def install() -> bool:
    """Route msgsend's plain options around pydantic; return whether it was installed."""
    try:
        from typer import _coercion, core

        base = _coercion.RuntimeParam
        build = _coercion.build_runtime_param
        parameter = core._TyperParameter
        original = parameter.get_runtime_param
        # The fields PlainParam passes on: a KeyError means typer changed, so do nothing.
        base.__dataclass_fields__["parameter_info"]
        base.__dataclass_fields__["annotation"]
    except (ImportError, AttributeError, KeyError):
        return False
    if getattr(original, "_msgsend", False):
        return True

    @dataclass(frozen=True)
    class PlainParam(base):  # type: ignore[misc, valid-type]
        descriptor: Any = None

        def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
            coerced = _fast(self.annotation, self.parameter_info, value)
            if coerced is _SLOW:
                return build(self.descriptor)._coerce_value(value, param=param, ctx=ctx)
            return coerced

    def get_runtime_param(self: Any) -> Any:
        if getattr(self, "_runtime_param", None) is None:
            descriptor: Any = getattr(self, "type_descriptor", None)
            try:
                plain = descriptor is not None and _plain(descriptor)
            except AttributeError:
                plain = False
            if plain:
                self._runtime_param = PlainParam(
                    descriptor.parameter_info, descriptor.annotation, descriptor
                )
        return original(self)

    get_runtime_param._msgsend = True  # type: ignore[attr-defined]
    parameter.get_runtime_param = get_runtime_param  # type: ignore[method-assign]
    return True


#: click's names for the plain types, as ``--help`` shows them
_HELP_TYPES: dict[Any, str] = {
    str: "TEXT",
    int: "INTEGER",
    float: "NUMBER",
    Path: "PATH",
    bool: "BOOLEAN",
}


def install_plain_help() -> bool:
    """Show click-style value names in ``--help`` and none for flags; return whether installed."""
    try:
        from typer import core

        classes = (core.TyperOption, core.TyperArgument)
        originals = [cls.display_type_rich for cls in classes]
    except (ImportError, AttributeError):
        return False
    if all(getattr(original, "_msgsend", False) for original in originals):
        return True

    def plain(original: Any, argument: bool) -> Any:
        def display_type_rich(self: Any, ctx: Any) -> str | None:
            if argument and self.metavar is not None:
                return None  # the name column shows it already (FILE.csv)
            if self.metavar is not None:
                return str(self.metavar)
            if getattr(self, "is_flag", False) or getattr(self, "count", False):
                return None
            annotation: Any = getattr(getattr(self, "type_descriptor", None), "annotation", None)
            name = _HELP_TYPES.get(annotation)
            return name if name is not None else original(self, ctx)

        display_type_rich._msgsend = True  # type: ignore[attr-defined]
        return display_type_rich

    core.TyperOption.display_type_rich = plain(originals[0], argument=False)  # type: ignore[method-assign]
    core.TyperArgument.display_type_rich = plain(originals[1], argument=True)  # type: ignore[method-assign]
    return True
