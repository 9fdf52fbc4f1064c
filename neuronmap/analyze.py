"""Analyses without a training loop: ``neuronmap analyze`` and ``neuronmap compare``.

``analyze`` reads a YAML config naming a model folder (or saved activations), a probe set, the
layers and the analyses, runs them once and writes a run folder. The format is
:data:`CONFIG_FORMAT` (also in ``neuronmap analyze --help`` and docs/analyses.md).

``compare`` computes linear CKA between every layer of two models (or two checkpoints of one
model) on the same texts and writes the matrix as CSV and a heatmap.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml

from neuronmap._files import check_run_name
from neuronmap.errors import InvalidParameterError, NeuronMapError

__all__ = ["CONFIG_FORMAT", "add_parser", "load_config", "run_config"]

#: The config file format, shown by ``neuronmap analyze --help``.
CONFIG_FORMAT = """\
CONFIG.yaml (read with yaml.safe_load; unknown keys are errors; relative paths are read from
the config file's folder):

  model: path/to/hf-model          # a save_pretrained() folder (with its tokenizer for text probes)
  task: sequence-classification    # or base (AutoModel); default: base
  attn_implementation: eager       # optional, passed to from_pretrained (eager for attention maps)
  # activations: acts.npz          # instead of model: saved activations (neuronmap extract);
  #                                # analyses that need the model are then recorded as failed
  probe:                           # one of csv, texts or npz; a bare file name also works
    csv: probe.csv                 # a table with a text column (and labels, groups)
    text_column: text              # default: text
    label_column: label            # default: label
    group_columns: [gender]        # sensitive attributes for the fairness analyses; default: []
    max_length: 64                 # tokenizer truncation; default: 128
    # texts: sentences.txt         # one text per line (no labels)
    # npz: probe.npz               # a ProbeSet.save() file
  layers: ["encoder.layer.*"]      # selectors over the model's named_modules() (see
                                   # `neuronmap layers MODEL_DIR`); with activations: default all
  reduce: mean                     # mean | first | last | max | none; default: mean
  analyses:                        # registry names, each optionally with constructor args
    - activation_stats
    - name: probing
      args: {cv: 3}
  out: neuronmap-runs              # parent of the run folder; default: neuronmap-runs
  run_name: offline-eval           # the run folder's name (one folder name); default: a timestamp
  batch_size: 32                   # probe examples per forward pass; default: 32
  step: 0                          # the step the results are recorded at; default: 0
  strict: false                    # raise on the first failing analysis; default: false

Analysis names: neuronmap.analyses.available_analyses(). The run folder holds report.html,
metrics.jsonl and the figures and tables (see `neuronmap report RUN_DIR`).
"""

_KNOWN_KEYS = {"model", "task", "attn_implementation", "activations", "probe", "layers", "reduce",
               "analyses", "out", "run_name", "batch_size", "step", "strict"}


def load_config(path: str | Path) -> dict[str, Any]:
    """Read and check an analysis config (``yaml.safe_load``; unknown keys are errors)."""
    path = Path(path)
    if not path.exists():
        raise NeuronMapError(f"Config file {str(path)!r} does not exist.")
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise InvalidParameterError(f"{path} is not valid YAML: {err}") from err
    if not isinstance(config, dict):
        raise InvalidParameterError(f"{path} must hold a mapping of settings; got {type(config).__name__}.")
    unknown = sorted(set(config) - _KNOWN_KEYS)
    if unknown:
        raise InvalidParameterError(f"Unknown key(s) {unknown} in {path}; allowed: {sorted(_KNOWN_KEYS)}.")
    if ("model" in config) == ("activations" in config):
        raise InvalidParameterError(f"{path} must name exactly one of 'model' or 'activations'.")
    for key in ("probe", "layers", "analyses"):
        if key not in config and not (key == "layers" and "activations" in config):
            raise InvalidParameterError(f"{path} lacks the required key {key!r}.")
    if config.get("run_name") is not None:
        check_run_name(config["run_name"], parameter=f"run_name in {path}")
    config["_base"] = path.parent
    return config


def _resolve(config: dict[str, Any], value: str) -> Path:
    p = Path(value)
    return p if p.is_absolute() else config["_base"] / p


def _existing(config: dict[str, Any], value: str, what: str) -> Path:
    """The resolved path of a file the config names, or a clear error before anything is written."""
    path = _resolve(config, value)
    if not path.is_file():
        raise NeuronMapError(f"The {what} file {value!r} does not exist (looked for {str(path)!r}; relative "
                             "paths are read from the config file's folder).")
    return path


def _check_input_files(config: dict[str, Any]) -> None:
    """Fail on a missing probe or activations file before the (slow) model load."""
    spec = config["probe"]
    if isinstance(spec, str):
        spec = {"npz": spec} if spec.endswith(".npz") else {"texts": spec}
    if not isinstance(spec, dict):
        raise InvalidParameterError(f"probe must be a file name or a mapping with 'csv', 'texts' or 'npz'; "
                                    f"got {spec!r}.")
    for kind in ("csv", "texts", "npz"):
        if kind in spec:
            _existing(config, spec[kind], f"probe {kind}")
    if "activations" in config:
        _existing(config, config["activations"], "activations")


def _build_analyses(specs: list[Any]) -> list[Any]:
    from neuronmap.analyses import get_analysis

    out = []
    for spec in specs:
        if isinstance(spec, str):
            out.append(get_analysis(spec))
        elif isinstance(spec, dict) and "name" in spec:
            args = spec.get("args") or {}
            if not isinstance(args, dict):
                raise InvalidParameterError(f"'args' of analysis {spec['name']!r} must be a mapping; got {args!r}.")
            out.append(get_analysis(spec["name"], **args))
        else:
            raise InvalidParameterError(
                f"Each analysis must be a name or a mapping with 'name' (and optional 'args'); got {spec!r}."
            )
    return out


def _load_probe(config: dict[str, Any], tokenizer: Any) -> Any:
    import pandas as pd

    from neuronmap.probe import ProbeSet

    spec = config["probe"]
    if isinstance(spec, str):
        spec = {"npz": spec} if spec.endswith(".npz") else {"texts": spec}
    max_length = int(spec.get("max_length", 128))
    if "npz" in spec:
        return ProbeSet.load(_existing(config, spec["npz"], "probe npz"))
    if tokenizer is None:
        raise NeuronMapError("The probe set is given as text, which needs a tokenizer in the model folder.")
    if "csv" in spec:
        csv = _existing(config, spec["csv"], "probe csv")
        try:
            df = pd.read_csv(csv)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
            raise NeuronMapError(f"The probe csv file {str(csv)!r} cannot be read as CSV: {err}") from err
        return ProbeSet.from_pandas(
            df, text_column=spec.get("text_column", "text"), tokenizer=tokenizer,
            label_column=spec.get("label_column", "label"), group_columns=spec.get("group_columns", []),
            max_length=max_length, name=Path(spec["csv"]).stem,
        )
    if "texts" in spec:
        lines = _existing(config, spec["texts"], "probe texts").read_text(encoding="utf-8").splitlines()
        return ProbeSet.from_texts([t for t in lines if t.strip()], tokenizer, max_length=max_length,
                                   name=Path(spec["texts"]).stem)
    raise InvalidParameterError(f"probe must give one of 'csv', 'texts' or 'npz'; got keys {sorted(spec)}.")


def _load_model(config: dict[str, Any]) -> tuple[Any, Any]:
    from neuronmap.cli import _load_hf

    task = config.get("task", "base")
    if task not in ("base", "sequence-classification"):
        raise InvalidParameterError(f"task must be 'base' or 'sequence-classification'; got {task!r}.")
    path = str(_resolve(config, config["model"]))
    return _load_hf(path, attn_implementation=config.get("attn_implementation"), task=task)


def run_config(config: dict[str, Any]) -> Path:
    """Run the configured analyses once and return the run folder.

    Everything the config names (analyses, model, probe set, activations) is loaded before the
    run folder is created, so that a mistake in the config leaves no empty folder behind.
    """
    from neuronmap.capture.hooks import Activations
    from neuronmap.engine import NeuronMap
    from neuronmap.reporters.local import LocalReporter

    _check_input_files(config)
    analyses = _build_analyses(config["analyses"])
    if "model" in config:
        model, tokenizer = _load_model(config)
    else:
        model, tokenizer = None, None
    probe = _load_probe(config, tokenizer)
    acts = Activations.load(_existing(config, config["activations"], "activations")) if "activations" in config \
        else None
    reporter = LocalReporter(_resolve(config, config.get("out", "neuronmap-runs")), run_name=config.get("run_name"))
    monitor = NeuronMap(
        probe,
        layers=config.get("layers") or (acts.layers if acts is not None else []),
        reduce=config.get("reduce", acts.reduce if acts is not None else "mean"),
        analyses=analyses,
        reporters=[reporter],
        batch_size=int(config.get("batch_size", 32)),
        strict=bool(config.get("strict", False)),
        name=config.get("run_name") or "neuronmap-analyze",
    )
    step = int(config.get("step", 0))
    status = "FAILED"
    try:
        if acts is not None:
            monitor.run_on_activations(acts, model=model, step=step, event="manual")
        else:
            monitor.run(model, step=step, event="manual")
        status = "FINISHED"
    finally:
        monitor.close(status)  # type: ignore[arg-type]
    return reporter.run_dir


def _cmd_analyze(args: argparse.Namespace) -> int:
    run_dir = run_config(load_config(args.config))
    print(f"Run folder: {run_dir}\nReport: {run_dir / 'report.html'}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from neuronmap.analyses.similarity import cka_heatmap, compare_models
    from neuronmap.capture import capture_activations
    from neuronmap.cli import _load_hf
    from neuronmap.probe import ProbeSet

    model_a, tokenizer = _load_hf(args.model_a)
    model_b, _ = _load_hf(args.model_b)
    if tokenizer is None:
        raise NeuronMapError(f"No tokenizer found in {args.model_a!r}; compare needs one to encode the texts.")
    texts_path = Path(args.texts)
    if not texts_path.exists():
        raise NeuronMapError(f"Texts file {args.texts!r} does not exist.")
    texts = [t for t in texts_path.read_text(encoding="utf-8").splitlines() if t.strip()]
    probe = ProbeSet.from_texts(texts, tokenizer, max_length=args.max_length)
    acts = [
        capture_activations(m, probe, layers=args.layers, reduce=args.reduce, progress=not args.quiet)
        for m in (model_a, model_b)
    ]
    matrix = compare_models(acts[0], acts[1], debiased=args.debiased)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    matrix.to_csv(out / "cka.csv")
    cka_heatmap(matrix).savefig(out / "cka.png", dpi=100, bbox_inches="tight")
    print(matrix.round(3).to_string())
    print(f"\nWrote {out / 'cka.csv'} and {out / 'cka.png'}")
    return 0


def add_parser(sub: Any) -> None:
    """Register ``analyze`` and ``compare`` on the ``neuronmap`` command."""
    p = sub.add_parser("analyze", help="run configured analyses once, without a training loop",
                       description="Run the analyses a YAML config names once, on a saved model (or saved "
                                   "activations) and a probe set, and write a run folder.",
                       epilog=CONFIG_FORMAT, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", metavar="CONFIG.yaml", help="model or activations, probe set, layers, analyses "
                   "(format below)")
    p.set_defaults(handler=_cmd_analyze)

    p = sub.add_parser("compare", help="layer-by-layer CKA between two models on the same texts")
    p.add_argument("model_a", metavar="MODEL_A")
    p.add_argument("model_b", metavar="MODEL_B")
    p.add_argument("--texts", required=True, metavar="FILE", help="one text per line")
    p.add_argument("--layers", nargs="+", default=["encoder.layer.*"])
    p.add_argument("--reduce", default="mean", choices=["mean", "first", "last", "max"])
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--debiased", action="store_true", help="debiased CKA (Nguyen et al. 2021)")
    p.add_argument("--out", default="neuronmap-compare", metavar="DIR")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(handler=_cmd_compare)
