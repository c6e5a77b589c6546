"""A data source's files: raw bytes as ids, suffixes of any case, a symbolic-link loop,
a file named like a glob, a corpus never all held out, the held-out document of a small corpus, eval_data shared with training, fingerprints."""
import os

import numpy as np

from tnl_jax import data
from tnl_jax.data import files, sources
from tnl_jax.tokenizers import get_tokenizer

BYTES = get_tokenizer("bytes")


def spec(source, **changes):
    return data.DataSpec(**{**dict(source=source, seq_len=16, batch_size=1, seed=0,
                                   tokenizer=BYTES, eval_fraction=0.0), **changes})


def tokens_of(docs):
    return [docs[i]["tokens"].tolist() for i in range(len(docs)) if docs[i] is not None]


def test_any_bytes_are_their_own_ids(tmp_path, rng):
    """Latin-1 or binary bytes are ids 0-255 as they are, never U+FFFD's 239, 191, 189."""
    raw = rng.integers(0, 256, 700, dtype=np.uint8)
    raw[raw == ord("\n")] = 0xE9  # One section, one document.
    (tmp_path / "latin1.txt").write_bytes(raw.tobytes())
    docs = data.documents(spec(str(tmp_path / "*.txt")), "train")
    assert tokens_of(docs) == [[BYTES.bos_id, *raw.tolist()]]


def test_suffixes_of_any_case(tmp_path, rng):
    stream = rng.integers(0, 256, 50).astype(np.int32)
    np.save(tmp_path / "tokens.npy", stream)
    os.rename(tmp_path / "tokens.npy", tmp_path / "tokens.NPY")
    assert files.kind_of([str(tmp_path / "tokens.NPY")], "x") == "npy"
    assert tokens_of(data.documents(spec(str(tmp_path / "*.NPY")), "train")) == [stream.tolist()]


def test_a_glob_through_a_link_loop_matches_each_file_once(tmp_path):
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "a.txt").write_text("alpha")
    (tmp_path / "corpus" / "loop").symlink_to(tmp_path / "corpus")
    assert files.expand(str(tmp_path / "corpus" / "**" / "*.txt")) == [
        str(tmp_path / "corpus" / "a.txt")]


def test_a_file_whose_name_holds_glob_characters_is_that_file(tmp_path, rng):
    """``a[1].txt`` names that file, not ``a1.txt`` (its glob); a pattern still globs."""
    mine, other = rng.integers(0, 256, (2, 300), dtype=np.uint8)
    (tmp_path / "a[1].txt").write_bytes(mine.tobytes())
    (tmp_path / "a1.txt").write_bytes(other.tobytes())
    assert files.expand(str(tmp_path / "a[1].txt")) == [str(tmp_path / "a[1].txt")]
    assert files.expand(str(tmp_path / "a[0-9].txt")) == [str(tmp_path / "a1.txt")]
    docs = data.documents(spec(str(tmp_path / "a[1].txt")), "train")
    assert sum(tokens_of(docs), []) == [BYTES.bos_id, *mine.tolist()]


def test_a_corpus_is_never_all_held_out(tmp_path, rng):
    """One document whose path's hash falls in eval_fraction still trains (the hash
    hangs on the folder, so this once failed in 2% of folders)."""
    name = next(f"doc{i}.txt" for i in range(10_000)
                if sources.held_out(f"{tmp_path / f'doc{i}.txt'}:0", 0.02))
    raw = rng.integers(0, 256, 300, dtype=np.uint8)
    raw[raw == ord("\n")] = 0xE9
    (tmp_path / name).write_bytes(raw.tobytes())
    source = spec(str(tmp_path / name), eval_fraction=0.02)
    assert tokens_of(data.documents(source, "train")) == [[BYTES.bos_id, *raw.tolist()]]
    assert tokens_of(data.documents(source, "eval")) == []


def test_a_small_corpus_holds_out_one_document(tmp_path, rng):
    """Two documents that the hash holds out neither of: the one of smaller hash is held
    out (the README's few-shards example), and training keeps the other."""
    for name in ("shard0", "shard1"):
        np.save(tmp_path / f"{name}.npy", rng.integers(0, 256, 40).astype(np.int32))
    keys = ["shard0.npy:0", "shard1.npy:0"]
    assert not any(sources.held_out(key, 0.02) for key in keys)
    held = data.documents(spec(str(tmp_path / "*.npy"), eval_fraction=0.02), "eval")
    trained = data.documents(spec(str(tmp_path / "*.npy"), eval_fraction=0.02), "train")
    assert len(held) == len(trained) == 1
    shards = {name: np.load(tmp_path / f"{name}.npy").tolist() for name in ("shard0", "shard1")}
    assert sorted([*tokens_of(held), *tokens_of(trained)]) == sorted(shards.values())
    assert data.eval_batches(spec(str(tmp_path / "*.npy"), eval_fraction=0.02), 1)


def test_eval_data_sharing_training_files_is_named(tmp_path):
    for name in ("a.txt", "b.txt", "c.md"):
        (tmp_path / name).write_text(name)
    assert files.shared_files(str(tmp_path / "*.txt"), str(tmp_path / "b.*")) == [
        str(tmp_path / "b.txt")]
    assert files.shared_files(str(tmp_path / "*.txt"), str(tmp_path / "*.md")) == []


def test_a_fingerprint_sees_each_kind_of_change_and_not_the_folder(tmp_path, rng, monkeypatch):
    folder = tmp_path / "corpus"
    folder.mkdir()
    for i in range(3):
        (folder / f"d{i}.txt").write_bytes(rng.integers(0, 256, 90000, dtype=np.uint8).tobytes())
    before = files.fingerprint(str(folder / "*.txt"))
    monkeypatch.chdir(tmp_path)  # The same files by a relative glob: the same fingerprint.
    assert files.fingerprint("corpus/*.txt") == before
    middle = bytearray((folder / "d1.txt").read_bytes())
    middle[-10] ^= 1  # The last bytes are hashed: a one-bit change is seen.
    (folder / "d1.txt").write_bytes(bytes(middle))
    (folder / "d2.txt").unlink()
    (folder / "d3.txt").write_text("new")
    assert files.describe_changes(before, files.fingerprint("corpus/*.txt")) == (
        "1 file(s) gone (d2.txt); 1 new file(s) (d3.txt); 1 file(s) rewritten "
        "(d1.txt: 90000 -> 90000 bytes)")
