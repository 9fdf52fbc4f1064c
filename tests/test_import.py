"""``import neuronmap`` stays light: no tracker or trainer framework is imported."""

import subprocess
import sys

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
