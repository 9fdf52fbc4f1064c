"""The analysis config: run the analyses a YAML file names once, without a training loop.

A config names a model folder (or saved activations), a probe set, the layers and the
analyses; :func:`run_config` runs them once and writes a run folder. The format is
:data:`CONFIG_FORMAT` (also in ``neuronmap analyze --help`` and docs/analyses.md). Both
``neuronmap analyze`` and the service's analysis jobs read configs through this module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from neuronmap._files import check_run_name
from neuronmap.errors import InvalidParameterError, NeuronMapError

__all__ = ["CONFIG_FORMAT", "build_analyses", "load_config", "run_config"]

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


def build_analyses(specs: list[Any]) -> list[Any]:
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
    from neuronmap.cli._models import load_hf_model

    task = config.get("task", "base")
    if task not in ("base", "sequence-classification"):
        raise InvalidParameterError(f"task must be 'base' or 'sequence-classification'; got {task!r}.")
    path = str(_resolve(config, config["model"]))
    return load_hf_model(path, attn_implementation=config.get("attn_implementation"), task=task)


def run_config(config: dict[str, Any]) -> Path:
    """Run the configured analyses once and return the run folder.

    Everything the config names (analyses, model, probe set, activations) is loaded before the
    run folder is created, so that a mistake in the config leaves no empty folder behind.
    """
    from neuronmap.capture.hooks import Activations
    from neuronmap.engine import NeuronMap
    from neuronmap.reporters.local import LocalReporter

    _check_input_files(config)
    analyses = build_analyses(config["analyses"])
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
