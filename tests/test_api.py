"""The public API of the package: ``__all__`` is sorted, complete and cheap to import."""

from __future__ import annotations

import subprocess
import sys

import msgsend


def test_all_is_sorted_and_every_name_resolves() -> None:
    assert msgsend.__all__ == sorted(msgsend.__all__)
    for name in msgsend.__all__:
        assert getattr(msgsend, name) is not None, name


def test_unknown_attribute_raises_attribute_error() -> None:
    try:
        msgsend.DoesNotExist  # noqa: B018
    except AttributeError as exc:
        assert "DoesNotExist" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("expected AttributeError")


def test_import_is_lazy() -> None:
    code = (
        "import sys, msgsend; "
        "heavy = [m for m in ('requests', 'rich', 'typer', 'prometheus_client', "
        "'pyrate_limiter', 'redis') if m in sys.modules]; print(heavy)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_cli_version_fast_path_imports_nothing_heavy() -> None:
    code = (
        "import sys\n"
        "from msgsend import cli\n"
        "heavy = [m for m in ('requests', 'rich', 'prometheus_client', 'pyrate_limiter', "
        "'msgsend.sandbox') if m in sys.modules]\n"
        "print(heavy)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
