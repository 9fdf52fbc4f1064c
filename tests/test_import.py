"""``import neuronmap`` stays light: no tracker or trainer framework is imported."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("lightning", "pytorch_lightning", "transformers", "mlflow", "wandb", "tensorboard")


def test_import_neuronmap_does_not_import_optional_dependencies() -> None:
    code = (
        "import sys, neuronmap, neuronmap.reporters, neuronmap.callbacks, neuronmap.analyses;"
        f"print([m for m in {HEAVY!r} if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_public_api_is_sorted_and_importable() -> None:
    import neuronmap as nm

    # ruff's RUF022 order: CONSTANT_CASE, then CamelCase, then everything else, each alphabetical.
    assert nm.__all__ == sorted(nm.__all__, key=lambda n: (0 if n.isupper() else 1 if n[0].isupper() else 2, n))
    assert len(set(nm.__all__)) == len(nm.__all__)
    for name in nm.__all__:
        assert getattr(nm, name) is not None


def test_requirement_cache_names_the_extra() -> None:
    from neuronmap._imports import RequirementCache
    from neuronmap.errors import MissingDependencyError

    flag = RequirementCache("surely_not_installed_pkg", "viz")
    assert not flag
    assert 'pip install "neuronmap[viz]"' in str(flag)
    try:
        flag.require("Projection")
    except MissingDependencyError as err:
        assert "Projection needs 'surely_not_installed_pkg'" in str(err)
        assert isinstance(err, ImportError)
    else:  # pragma: no cover
        raise AssertionError("require() did not raise")


# Issue 17: `neuronmap --version` / `--help` and `import neuronmap` stay fast.
NUMERIC = ("torch", "scipy")


def _modules_after(code: str) -> list[str]:
    probe = f"{code}\nimport json, sys; print(json.dumps([m for m in {NUMERIC!r} if m in sys.modules]))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_neuronmap_imports_neither_torch_nor_scipy() -> None:
    assert _modules_after("import neuronmap") == []


def test_cli_version_and_help_import_neither_torch_nor_scipy() -> None:
    for argv in (["--version"], ["--help"], ["gate", "--help"], ["extract", "--help"]):
        code = (
            "from neuronmap.cli import main\n"
            f"try:\n    main({argv!r})\nexcept SystemExit as err:\n    assert err.code == 0, err.code"
        )
        assert _modules_after(code) == [], argv


def test_lazy_names_agree_with_all_and_dir() -> None:
    import neuronmap as nm

    assert set(nm._LAZY) | {"__version__"} == set(nm.__all__)
    assert set(nm.__all__) <= set(dir(nm))
    with pytest.raises(AttributeError, match="has no attribute 'NoSuchThing'"):
        nm.NoSuchThing  # noqa: B018


def test_type_checking_imports_match_the_lazy_table() -> None:
    # The `if TYPE_CHECKING:` block is what type checkers see; it must bind every lazy name.
    import ast

    import neuronmap as nm

    tree = ast.parse(Path(nm.__file__).read_text(encoding="utf-8"))
    block = next(n for n in tree.body if isinstance(n, ast.If) and ast.unparse(n.test) == "TYPE_CHECKING")
    bound = {
        (alias.asname or alias.name): f"{node.module}" if alias.asname is None else f"{node.module}:{alias.name}"
        for node in block.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert bound == nm._LAZY
