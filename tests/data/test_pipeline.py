"""The Grain pipeline: packing, loss masks at document boundaries, splits, resumable state."""
import numpy as np
import pytest

from tnl_jax import data
from tnl_jax.data import mqar as data_mqar
from tnl_jax.data import sources as data_sources
from tnl_jax.tokenizers import get_tokenizer

from tests.data.iterator_checks import assert_resumes_exactly


@pytest.fixture(scope="module")
def tokenizer():
    return get_tokenizer("bytes")


def spec_for(source, tokenizer, **changes):
    values = dict(source=source, seq_len=32, batch_size=4, seed=0, tokenizer=tokenizer,
                  eval_fraction=0.25)
    return data.DataSpec(**{**values, **changes})


def write_docs(tmp_path, texts):
    for i, text in enumerate(texts):
        (tmp_path / f"doc{i:02d}.txt").write_text(text)
    return str(tmp_path / "*.txt")


def test_stdlib_corpus_is_sorted_and_split(tokenizer):
    files = data_sources.stdlib_files()
    assert len(files) > 100 and files == sorted(files)
    assert not any("site-packages" in f.parts for f in files)
    spec = spec_for("stdlib", tokenizer, eval_fraction=0.02)
    train, held_out = data.documents(spec, "train"), data.documents(spec, "eval")
    assert len(train) + len(held_out) == len(files) and 0 < len(held_out) < len(files) // 10


def test_packing_masks_targets_across_documents(tmp_path, tokenizer):
    pattern = write_docs(tmp_path, [f"document {i}: " + "x" * (5 + 7 * i) for i in range(12)])
    batch = next(data.train_batches(spec_for(pattern, tokenizer, eval_fraction=0.0)))
    assert set(batch) == set(data.BATCH_KEYS)
    assert batch["input_ids"].shape == (4, 32)
    seg, mask, pos = batch["segment_ids"], batch["loss_mask"], batch["positions"]
    assert seg.min() >= 1 and (np.diff(seg, axis=1) >= 0).all()
    # A target is in the loss exactly when it continues its input's document.
    np.testing.assert_array_equal(batch["targets"][:, :-1], batch["input_ids"][:, 1:])
    np.testing.assert_array_equal(mask[:, :-1], (seg[:, 1:] == seg[:, :-1]).astype(np.float32))
    boundaries = np.argwhere(np.diff(seg, axis=1) != 0)
    assert len(boundaries) > 0
    for row, col in boundaries:
        assert mask[row, col] == 0 and pos[row, col + 1] == 0
        assert batch["input_ids"][row, col + 1] == tokenizer.bos_id  # a new document


@pytest.mark.parametrize("skip", [0, 1, 3, 7])
def test_every_iterator_position_resumes_exactly(tmp_path, tokenizer, skip):
    pattern = write_docs(tmp_path, [f"text {i} " * (3 + i) for i in range(20)])
    assert_resumes_exactly(spec_for(pattern, tokenizer, shuffle_window=8), skip, batches=4)


def test_iterator_state_resumes_exactly(tmp_path, tokenizer):
    pattern = write_docs(tmp_path, [f"text {i} " * (3 + i) for i in range(20)])
    spec = spec_for(pattern, tokenizer)
    it = data.train_batches(spec)
    for _ in range(3):
        next(it)
    state = data.IteratorCheckpoint(it).get_state()  # JSON bytes, as checkpointed.
    expected = [next(it) for _ in range(5)]  # Crosses an epoch boundary.
    resumed = data.train_batches(spec)
    data.IteratorCheckpoint(resumed).set_state(state)
    for want in expected:
        got = next(resumed)
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])


def test_processes_read_disjoint_shards(tmp_path, tokenizer):
    pattern = write_docs(tmp_path, [f"doc {i}" for i in range(10)])
    shards = [data.documents(spec_for(pattern, tokenizer, eval_fraction=0.0, process_index=i,
                                      process_count=3), "train") for i in range(3)]
    texts = [tuple(shard[j]["tokens"]) for shard in shards for j in range(len(shard))]
    assert sorted(len(s) for s in shards) == [3, 3, 4] and len(set(texts)) == 10


def test_npy_streams_split_at_eos_and_skip_empty_documents(tmp_path, tokenizer, monkeypatch):
    """Documents end after each EOS, also across the chunks a stream is scanned in; a lone
    EOS or a last single token holds no target and is no document."""
    monkeypatch.setattr(data_sources, "STREAM_CHUNK_TOKENS", 5)
    eos = tokenizer.eos_id
    stream = np.array([5, 6, 7, eos, eos, 8, 9, eos, 10, 11, 12, 13, eos, 14], np.uint16)
    np.save(tmp_path / "shard.npy", stream)
    docs = data_sources.npy_documents([str(tmp_path / "shard.npy")], "train", eos, 0.0,
                                      vocab_size=tokenizer.vocab_size)
    assert [list(docs[i]["tokens"]) for i in range(len(docs))] == [
        [5, 6, 7, eos], [8, 9, eos], [10, 11, 12, 13, eos]]
    assert docs[0]["tokens"].dtype == np.int32


def test_array_record_documents(tmp_path, tokenizer):
    from array_record.python.array_record_module import ArrayRecordWriter
    path = str(tmp_path / "docs.array_record")
    writer = ArrayRecordWriter(path, "group_size:1")
    documents = [np.arange(i, i + 3 + i, dtype=np.int32) for i in range(6)]
    for doc in documents:
        writer.write(doc.tobytes())
    writer.close()
    docs = data.documents(spec_for(path, tokenizer, eval_fraction=0.0), "train")
    assert [list(docs[i]["tokens"]) for i in range(len(docs))] == [list(d) for d in documents]
    batch = next(data.train_batches(spec_for(path, tokenizer, eval_fraction=0.0, seq_len=8,
                                             batch_size=2, shuffle_window=0)))
    assert batch["input_ids"].shape == (2, 8)


def test_long_text_files_are_cut_into_sections(tmp_path, monkeypatch):
    monkeypatch.setattr(data_sources, "TEXT_SECTION_BYTES", 16)
    lines = [f"line {i:03d}\n" for i in range(40)]
    path = tmp_path / "long.txt"
    path.write_text("".join(lines))
    sections = data_sources._text_sections(path)
    pieces = [data_sources._read_section(*s) for s in sections]
    assert len(pieces) > 5 and b"".join(pieces) == path.read_bytes()


def test_mqar_examples_follow_zoology(tokenizer):
    assert data_mqar.train_mix(512) == ((128, 8), (256, 16), (512, 32), (512, 64))
    doc = data_mqar.example("train", 3, length=128, pairs=8, vocab=8192)
    tokens, weights = doc["tokens"], doc["weights"]
    keys, values = tokens[:16:2], tokens[1:16:2]
    assert (keys >= 1).all() and (keys < 4096).all() and len(set(keys)) == 8
    assert (values >= 4096).all() and len(set(values)) == 8
    answered = np.flatnonzero(weights)
    assert weights.sum() == 8 and (answered % 2 == 1).all() and answered.min() > 16
    lookup = dict(zip(keys, values))
    assert sorted(tokens[answered - 1]) == sorted(keys)  # Every key asked once...
    assert all(lookup[tokens[i - 1]] == tokens[i] for i in answered)  # ...answered right.
    gaps = np.concatenate([data_mqar.query_gaps(np.random.default_rng(i), 100, 4)
                           for i in range(200)])
    assert np.mean(gaps < 10) > 0.3  # The power law: over 3x uniform in the first tenth.
    batch = next(data.train_batches(spec_for("mqar", tokenizer, seq_len=64)))
    mask = batch["loss_mask"]
    answers = batch["targets"][mask > 0]
    assert mask.sum() > 0 and (answers >= tokenizer.vocab_size // 2).all()


def test_eval_data_is_held_out_whole(tmp_path, tokenizer):
    """Every file of eval_data is evaluated: none is dropped by the eval_fraction hash."""
    (tmp_path / "held").mkdir()
    letters = "qwxz"
    for letter in letters:
        (tmp_path / "held" / f"{letter}.txt").write_text(letter * 6)
    pattern = write_docs(tmp_path, ["some training text"])
    spec = spec_for(pattern, tokenizer, eval_source=str(tmp_path / "held" / "*.txt"))
    (batch,) = data.eval_batches(spec, 1)
    seen = set(tokenizer.decode(batch["input_ids"].reshape(-1).tolist()))
    assert set(letters) <= seen and not set("some") & seen


def test_eval_min_bytes_holds_out_long_files_only(tmp_path, tokenizer):
    """With eval_min_bytes, only files that big are held out (the hash picks among
    them); every short file trains."""
    texts = ["short" * (1 + i % 3) for i in range(20)] + ["long text " * 40] * 20
    spec = spec_for(write_docs(tmp_path, texts), tokenizer, eval_fraction=0.5,
                    eval_min_bytes=100)
    held_out = [len(d["tokens"]) for d in data.documents(spec, "eval")]
    train = [len(d["tokens"]) for d in data.documents(spec, "train")]
    assert 0 < len(held_out) < 20 and min(held_out) > 100
    assert len(train) + len(held_out) == 40 and sum(n < 100 for n in train) == 20


def test_empty_documents_are_skipped(tmp_path, tokenizer):
    """An empty file tokenises to a lone BOS, which holds no target: it is no document,
    and a batch holds only documents with targets."""
    pattern = write_docs(tmp_path, ["", "alpha " * 9, "", "beta " * 7, ""])
    spec = spec_for(pattern, tokenizer, eval_fraction=0.0, seq_len=16, batch_size=2,
                    shuffle_window=0)
    docs = data.documents(spec, "train")
    assert [docs[i] is None for i in range(len(docs))] == [True, False, True, False, True]
    batch = next(data.train_batches(spec))
    starts = batch["positions"] == 0  # A BOS opens each document: no two BOS in a row.
    bos = batch["input_ids"] == tokenizer.bos_id
    assert not (bos[:, :-1] & bos[:, 1:]).any() and (bos <= starts).all()


def test_no_evaluation_needs_no_held_out_set(tmp_path, tokenizer):
    pattern = write_docs(tmp_path, ["a document"])
    spec = spec_for(pattern, tokenizer, eval_fraction=0.0)
    assert data.eval_batches(spec, 0) == []
    with pytest.raises(ValueError, match="no held-out set"):
        data.eval_batches(spec, 1)
