"""The public API of the package: ``__all__`` is sorted, complete and cheap to import."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path

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


@functools.cache
def modules_loaded_by_imports() -> dict[str, list[str]]:
    """In one fresh interpreter: the heavy modules loaded by ``import msgsend``, then by the
    console script's module (``msgsend --version``), then by ``from msgsend import cli``."""
    code = (
        "import json, sys\n"
        "def loaded(names): return [m for m in names if m in sys.modules]\n"
        "import msgsend\n"
        "package = loaded(('requests', 'rich', 'typer', 'prometheus_client', 'pyrate_limiter', "
        "'redis'))\n"
        "from msgsend import __main__\n"
        "entry = loaded(('typer', 'click', 'msgsend.cli', 'msgsend.errors'))\n"
        "from msgsend import cli\n"
        "command = loaded(('requests', 'rich', 'prometheus_client', 'pyrate_limiter', "
        "'msgsend.sandbox'))\n"
        "print(json.dumps({'package': package, 'entry': entry, 'cli': command}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded: dict[str, list[str]] = json.loads(done.stdout)
    return loaded


def test_import_is_lazy() -> None:
    assert modules_loaded_by_imports()["package"] == []


def test_version_is_answered_before_the_command_line_is_imported() -> None:
    assert modules_loaded_by_imports()["entry"] == []


def test_the_command_line_imports_nothing_heavy_before_a_command_runs() -> None:
    # `msgsend --help`, `config show` and `bulk --dry-run` never pay for requests.
    assert modules_loaded_by_imports()["cli"] == []


def test_the_readme_code_map_names_every_module() -> None:
    """README "Code map": one line per module of src/msgsend (a package's line names its files)."""
    root = Path(msgsend.__file__).parent
    readme = (root.parent.parent / "README.md").read_text(encoding="utf-8")
    code_map = readme.split("## Code map", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in code_map.splitlines() if line.startswith("| `")]
    missing = []
    for module in sorted(root.rglob("*.py")):
        relative = module.relative_to(root)
        if len(relative.parts) == 1:
            found = any(row.startswith(f"| `{module.name}` |") for row in rows)
        else:
            package = f"| `{relative.parts[0]}/` |"
            found = any(row.startswith(package) and f"`{module.name}`" in row for row in rows)
        if not found:
            missing.append(str(relative))
    assert missing == []
