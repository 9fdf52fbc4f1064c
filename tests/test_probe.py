from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from neuronmap import ProbeSet, ProbeSetError
from neuronmap.errors import InvalidParameterError
from neuronmap.testing import tiny_text_probe, tiny_tokenizer


def test_from_tensors_with_labels_groups_and_metadata() -> None:
    x = torch.arange(20, dtype=torch.float32).reshape(10, 2)
    probe = ProbeSet.from_tensors(
        x, labels=list(range(10)), groups={"g": ["a", "b"] * 5}, metadata={"concept": ["c"] * 10}
    )
    assert len(probe) == 10
    assert probe.positional
    assert probe.group_columns == ["g"]
    assert list(probe.labels) == list(range(10))
    assert list(probe.column("concept")) == ["c"] * 10
    batches = list(probe.batches(4))
    assert [b["input"].shape[0] for b in batches] == [4, 4, 2]
    assert torch.equal(torch.cat([b["input"] for b in batches]), x)


def test_mapping_inputs_and_text_batches_are_trimmed_to_their_longest_sequence() -> None:
    probe = ProbeSet.from_texts(["a b c d e f", "a", "b", "c"], tiny_tokenizer(), labels=[0, 1, 0, 1])
    assert sorted(probe.inputs) == ["attention_mask", "input_ids"]
    assert probe.texts[0] == "a b c d e f"
    first, second = probe.batches(2)
    assert first["input_ids"].shape == (2, 8)  # CLS + 6 words + SEP
    assert second["input_ids"].shape == (2, 3)
    untrimmed = list(probe.batches(2, trim=False))
    assert untrimmed[1]["input_ids"].shape == (2, 8)


def test_from_dataloader_collects_in_order_and_stops_at_max_examples() -> None:
    data = torch.utils.data.TensorDataset(torch.arange(30.0).reshape(15, 2), torch.arange(15))
    loader = torch.utils.data.DataLoader(data, batch_size=4)
    probe = ProbeSet.from_dataloader(loader, max_examples=10)
    assert len(probe) == 10
    assert list(probe.labels) == list(range(10))
    assert probe.positional


def test_from_pandas_names_missing_columns() -> None:
    df = pd.DataFrame({"sentence": ["a b", "c"], "label": [1, 0], "gender": ["f", "m"], "tid": [3, 4]})
    probe = ProbeSet.from_pandas(df, text_column="sentence", tokenizer=tiny_tokenizer(), group_columns=["gender"])
    assert probe.group_columns == ["gender"]
    assert list(probe.column("tid")) == [3, 4]
    with pytest.raises(ProbeSetError, match=r"Column\(s\) \['race'\] not found in the DataFrame; it has \['sentence'"):
        ProbeSet.from_pandas(df, text_column="sentence", tokenizer=tiny_tokenizer(), group_columns=["race"])



def test_from_pandas_rejects_list_valued_columns_at_construction(tmp_path) -> None:
    df = pd.DataFrame({"text": ["a b", "c", "d"], "label": [1, 0, 1], "tags": [["x"], [], ["y", "z"]],
                       "spans": [None, {"s": 1}, None], "tid": [1, 2, 3]})
    with pytest.raises(ProbeSetError, match=r"Column\(s\) \['spans', 'tags'\] of the DataFrame hold non-scalar "
                                            r"values \(\{'tags': 'row 0: list', 'spans': 'row 1: dict'\}\)"):
        ProbeSet.from_pandas(df, tokenizer=tiny_tokenizer())
    probe = ProbeSet.from_pandas(df.drop(columns=["tags", "spans"]), tokenizer=tiny_tokenizer())
    probe.save(tmp_path / "p.npz")  # what a list column used to break: the fingerprint and the saved format
    assert ProbeSet.load(tmp_path / "p.npz").fingerprint() == probe.fingerprint()
    with pytest.raises(ProbeSetError, match=r"metadata column 'tags' must hold one scalar .* row 1 holds a ndarray"):
        ProbeSet(torch.zeros(2, 3), metadata={"tags": [1, np.zeros(2)]})


def test_load_of_a_corrupt_file_is_a_clear_error(tmp_path) -> None:
    from neuronmap.errors import CorruptFileError

    path = tmp_path / "p.npz"
    tiny_text_probe(n=8).save(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CorruptFileError, match=r"Cannot read a probe set from .*p\.npz.*truncated, corrupt"):
        ProbeSet.load(path)
    with pytest.raises(FileNotFoundError, match="No probe-set file"):
        ProbeSet.load(tmp_path / "missing.npz")


def test_fingerprint_is_deterministic_and_content_sensitive() -> None:
    a, b = tiny_text_probe(seed=1), tiny_text_probe(seed=1)
    assert a.fingerprint() == b.fingerprint()
    assert len(a.fingerprint()) == 64
    assert a.fingerprint() != tiny_text_probe(seed=2).fingerprint()
    c = ProbeSet(a.inputs, labels=np.r_[1 - a.labels[:1], a.labels[1:]])
    assert ProbeSet(a.inputs, labels=a.labels).fingerprint() != c.fingerprint()


def test_save_and_load_round_trip_without_pickle(tmp_path) -> None:
    probe = tiny_text_probe()
    path = probe.save(tmp_path / "probe.npz")
    loaded = ProbeSet.load(path)
    assert loaded.fingerprint() == probe.fingerprint()
    with np.load(path, allow_pickle=False) as data:  # loads without pickle
        assert "__meta__" in data.files


def test_empty_probe_set_is_refused() -> None:
    with pytest.raises(ProbeSetError, match="ProbeSet is empty: got 0 examples"):
        ProbeSet(torch.empty(0, 3))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"labels": [0, 1, 0]}, "labels has 3 entries but the probe set has 4 inputs"),
        ({"groups": {"gender": ["f"] * 5}}, "group column 'gender' has 5 entries but the probe set has 4 inputs"),
    ],
)
def test_length_mismatch_names_both_lengths(kwargs, message) -> None:
    with pytest.raises(ProbeSetError, match=message):
        ProbeSet(torch.zeros(4, 2), **kwargs)


def test_inputs_disagreeing_on_length() -> None:
    with pytest.raises(ProbeSetError,
                       match=r"disagree on the number of examples: \{'input_ids': 3, 'attention_mask': 2\}"):
        ProbeSet({"input_ids": torch.zeros(3, 4), "attention_mask": torch.zeros(2, 4)})


def test_missing_column_lists_the_columns_there_are() -> None:
    with pytest.raises(ProbeSetError,
                       match=r"Column 'race' not found in probe set 'tiny-text'; it has \['text', 'gender', 'label'\]"):
        tiny_text_probe().column("race")


def test_bad_batch_size() -> None:
    with pytest.raises(InvalidParameterError, match="batch_size must be a positive int; got 0"):
        next(tiny_text_probe().batches(0))


def test_shard_covers_every_example_once() -> None:
    probe = tiny_text_probe(n=10)
    shards = [probe.shard(r, 3) for r in range(3)]
    assert sum(len(s) for s in shards) == 10
    assert [t for s in shards for t in s.texts] == probe.texts
