"""Token sets: the train / held-out rule, local sources, errors that say what to do."""

import re
import sys
import types

import pytest
import torch

from evopress.data import (
    HELDOUT,
    TRAIN,
    corpus_files,
    describe_source,
    load_tokens,
    normalize_split,
    split_of,
)
from evopress.data.local import split_text
from evopress.errors import DataError
from evopress.zoo.tokenizer import train_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    text = [f"def f{i}(x):\n    return x * {i} + {i % 7}\n" for i in range(400)]
    return train_tokenizer(text, 300)


def _write_files(root, n, words=60):
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (root / f"file_{i:03d}.txt").write_text(f"file {i} " + " ".join(f"w{i}_{k}" for k in range(words)) + "\n")
    return root


def test_split_rule_is_a_fixed_hash_of_the_name():
    keys = [f"pkg/module_{i}.py" for i in range(20_000)]
    sides = [split_of(k) for k in keys]
    assert sides == [split_of(k) for k in keys]
    assert 0.04 < sides.count(HELDOUT) / len(keys) < 0.06
    # pinned: a change of the hash would silently move files across the split
    assert [split_of(f"stdlib/{k}") for k in ("os.py", "json/decoder.py", "imp.py")] == [TRAIN, TRAIN, HELDOUT]


def test_builtin_corpus_sides_never_overlap_and_seed_only_orders():
    train, heldout = corpus_files("train"), corpus_files("heldout")
    train_keys, heldout_keys = {f.key for f in train}, {f.key for f in heldout}
    assert heldout_keys and not train_keys & heldout_keys
    assert all(k.startswith("stdlib/") and "site-packages" not in k for k in train_keys | heldout_keys)
    other = corpus_files("heldout", seed=1)
    assert {f.key for f in other} == heldout_keys
    assert [f.key for f in other] != [f.key for f in heldout]


def test_split_names():
    assert normalize_split("test") == HELDOUT and normalize_split("Train") == TRAIN
    with pytest.raises(DataError, match="'train' or 'heldout'"):
        normalize_split("dev")


def test_single_file_is_split_by_position(tmp_path, tokenizer):
    text = "".join(f"line {i} = {i * 3}\n" for i in range(3000))
    path = tmp_path / "corpus.txt"
    path.write_text(text)
    head, tail = split_text(text, TRAIN), split_text(text, HELDOUT)
    assert head + tail == text and head.endswith("\n")
    assert 0.89 < len(head) / len(text) < 0.91
    train = load_tokens(path, tokenizer, "train", 32, 2048)
    heldout = load_tokens(str(path), tokenizer, "heldout", 32, None)
    assert train.shape == (64, 32) and train.dtype == torch.long
    assert tokenizer.decode(heldout[0]) == tail[: len(tokenizer.decode(heldout[0]))]


def test_folder_is_split_by_file_name(tmp_path, tokenizer):
    root = _write_files(tmp_path / "docs", 120)
    train = load_tokens(root, tokenizer, "train", 16, None, seed=0)
    heldout = load_tokens(root, tokenizer, "heldout", 16, None, seed=0)
    def files_in(tokens):  # words are "w<file>_<k>"
        return {w.split("_")[0] for w in tokenizer.decode(tokens.reshape(-1)).split() if w.startswith("w")}

    train_files, heldout_files = files_in(train), files_in(heldout)
    assert heldout_files and not train_files & heldout_files
    reordered = load_tokens(root, tokenizer, "train", 16, None, seed=1)
    assert reordered.shape == train.shape and not torch.equal(reordered, train)


def test_documents_are_joined_by_eos(tmp_path, tokenizer):
    root = _write_files(tmp_path / "docs", 40, words=5)
    tokens = load_tokens(root, tokenizer, "train", 8, None)
    assert (tokens == tokenizer.eos_token_id).sum() >= 30


def test_empty_or_short_data_is_a_clear_error(tmp_path, tokenizer):
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(DataError, match="fewer than one sequence of 64"):
        load_tokens(tmp_path / "empty.txt", tokenizer, "train", 64, 4096)
    (tmp_path / "short.txt").write_text("x = 1\n" * 5)
    with pytest.raises(DataError, match=r"gave \d+ tokens, fewer than one sequence of 512"):
        load_tokens(tmp_path / "short.txt", tokenizer, "train", 512, 4096)
    (tmp_path / "nothing").mkdir()
    with pytest.raises(DataError, match="has no files"):
        load_tokens(tmp_path / "nothing", tokenizer, "train", 16, 64)
    with pytest.raises(DataError, match="less than one sequence"):
        load_tokens(tmp_path / "short.txt", tokenizer, "train", 16, 8)


def test_folder_without_heldout_files_says_what_to_do(tmp_path, tokenizer):
    root = _write_files(tmp_path / "few", 3)
    assert all(split_of(f"file_{i:03d}.txt") == TRAIN for i in range(3))
    with pytest.raises(DataError, match="pass a single file"):
        load_tokens(root, tokenizer, "heldout", 16, 64)


def test_running_out_of_text_warns_and_returns_what_exists(tmp_path, tokenizer):
    (tmp_path / "a.txt").write_text("alpha beta gamma\n" * 200)
    with pytest.warns(UserWarning, match="has only"):
        tokens = load_tokens(tmp_path / "a.txt", tokenizer, "train", 16, 10**7)
    assert 0 < tokens.shape[0] < 10**7 // 16


def test_unknown_source_lists_the_known_ones(tokenizer):
    with pytest.raises(DataError, match="builtin, builtin\\+site-packages, wikitext2, c4, fineweb-edu"):
        load_tokens("no/such/place", tokenizer, "train", 16, 64)


def test_hub_name_without_datasets_package(monkeypatch, tokenizer):
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    with pytest.raises(DataError, match=r"pip install 'evopress\[data\]'"):
        load_tokens("wikitext2", tokenizer, "heldout", 16, 64)


@pytest.mark.parametrize("name", ["wikitext2", "c4", "fineweb-edu"])
def test_hub_name_offline(monkeypatch, tokenizer, name):
    def load_dataset(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'huggingface.co'")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    with pytest.raises(DataError, match="could not be reached.*offline.*'builtin'"):
        load_tokens(name, tokenizer, "train", 16, 64)


def test_describe_source_records_the_protocol(tmp_path):
    info = describe_source("builtin", "test", 256, 12, seed=3)
    assert info["split"] == HELDOUT and info["num_tokens"] == 3072 and info["seed"] == 3
    assert info["kind"] == "builtin" and "sha1" in info["split_rule"]
    (tmp_path / "a.txt").write_text("x")
    assert describe_source(tmp_path / "a.txt", "train", 8, 1)["kind"] == "file"


class _FakeRows(list):
    """Just enough of a datasets.Dataset / IterableDataset for the hub loaders."""

    def shuffle(self, seed, buffer_size):
        return self

    def __getitem__(self, key):
        return [row[key] for row in self] if isinstance(key, str) else super().__getitem__(key)


def test_hub_loaders_pick_the_documented_splits(monkeypatch, tokenizer):
    calls = []

    def load_dataset(path, name=None, **kwargs):
        calls.append((path, name, kwargs))
        return _FakeRows({"id": f"row{i}", "text": f"doc{i} " + "x = 1\n" * 20} for i in range(200))

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    train = load_tokens("fineweb-edu", tokenizer, "train", 16, None)
    heldout = load_tokens("fineweb-edu", tokenizer, "heldout", 16, None)
    def docs(tokens):
        return set(re.findall(r"doc\d+", tokenizer.decode(tokens.reshape(-1))))

    assert docs(train) and docs(heldout) and not docs(train) & docs(heldout)
    assert 60 < len(docs(heldout)) < 140  # about half the rows
    load_tokens("c4", tokenizer, "heldout", 16, 64)
    assert calls[-1][2]["data_files"] == {"shard": "en/c4-validation.00000-of-00008.json.gz"}
    load_tokens("wikitext2", tokenizer, "heldout", 16, 64)
    assert calls[-1][:2] == ("Salesforce/wikitext", "wikitext-2-raw-v1") and calls[-1][2]["split"] == "test"
