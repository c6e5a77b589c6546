"""A run's start: the vocabulary a text tokenizer implies, paths in YAML, one-line errors
with exit status 2 that leave nothing behind, a changed data stream refused on resume."""
import dataclasses
import pathlib
import warnings

import numpy as np
import pytest

from tests.training.runs import TINY, tiny_config
from tnl_jax.cli import train as train_cli
from tnl_jax.tokenizers import get_tokenizer
from tnl_jax.training import config as train_config
from tnl_jax.training import loop, metrics, resume



def random_words(count: int, seed: int = 0) -> list[str]:
    """Words of 2 to 6 random letters: enough distinct pairs for hundreds of merges."""
    rng = np.random.default_rng(seed)
    return ["".join(chr(97 + c) for c in rng.integers(0, 26, rng.integers(2, 7)))
            for _ in range(count)]


@pytest.fixture(scope="module")
def json_tokenizer(tmp_path_factory):
    """A `tokenizers` BPE file of more ids than tnl-tiny's 384 embedding rows."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=420, special_tokens=["<pad>", "<s>", "</s>", "<unk>"])
    tokenizer.train_from_iterator([" ".join(random_words(3000))], trainer)
    path = tmp_path_factory.mktemp("tokenizer") / "words.json"
    tokenizer.save(str(path))
    return path


def test_a_text_tokenizer_sets_the_vocabulary_unless_one_is_named(json_tokenizer):
    tokenizer = get_tokenizer(str(json_tokenizer))
    assert tokenizer.vocab_size > 384  # More than the preset's rows: the README's case.
    model = train_config.load(None, [f"tokenizer={json_tokenizer}"]).model
    assert (model.vocab_size, model.pad_token_id, model.bos_token_id, model.eos_token_id) == (
        tokenizer.vocab_size, tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id)
    named = train_config.load(None, [f"tokenizer={json_tokenizer}", "model.vocab_size=1024"])
    assert named.model.vocab_size == 1024
    with pytest.raises(ValueError, match=f"expected model.vocab_size >= {tokenizer.vocab_size}; "
                                         f"set model.vocab_size={tokenizer.vocab_size} or more"):
        train_config.load(None, [f"tokenizer={json_tokenizer}", "model.vocab_size=400"])


def test_yaml_paths_expand_home_and_an_empty_group_changes_nothing(tmp_path):
    (tmp_path / "run.yaml").write_text("run_dir: ~/runs/x\nmodel:\nsteps: 7\n")
    cfg = train_config.load(str(tmp_path / "run.yaml"))
    assert cfg.run_dir == str(pathlib.Path.home() / "runs" / "x") and cfg.steps == 7
    assert cfg.model == train_config.load(None).model


def test_a_failed_start_is_one_line_exit_2_and_creates_nothing(tmp_path, capsys):
    run_dir = tmp_path / "new" / "run"
    with pytest.raises(SystemExit) as exit_:
        train_cli.main([*TINY, f"run_dir={run_dir}", f"data={tmp_path}/corpus/*.txt"])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and len(err.splitlines()) == 1, err
    assert f"data='{tmp_path}/corpus/*.txt': no file matches" in err
    assert not (tmp_path / "new").exists()


def test_a_start_failing_after_the_lock_removes_only_what_it_created(tmp_path, monkeypatch,
                                                                     capsys):
    def refuse(cfg, mesh):
        raise ValueError("init_from='elsewhere': its parameters do not match")
    monkeypatch.setattr(loop, "Trainer", refuse)
    for run_dir, existed in ((tmp_path / "a" / "b", False), (tmp_path / "kept", True)):
        if existed:
            run_dir.mkdir()
            (run_dir / "notes.txt").write_text("the user's file")
        with pytest.raises(SystemExit) as exit_:
            train_cli.main([*TINY, f"run_dir={run_dir}", "steps=2"])
        assert exit_.value.code == 2
        assert "tnl-train: error: init_from='elsewhere'" in capsys.readouterr().err
        assert (run_dir / "notes.txt").exists() if existed else not (tmp_path / "a").exists()
        assert not (run_dir / "trainer.lock").exists()


def test_changed_data_files_refuse_the_resume_by_name(tmp_path, rng):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(4):
        (corpus / f"doc{i}.txt").write_bytes(rng.integers(32, 127, 3000, dtype=np.uint8).tobytes())
    cfg = tiny_config(tmp_path / "run", f"data={corpus}/*.txt", "steps=2", "checkpoint_every=2",
                      "eval_fraction=0.0")
    loop.main(cfg)
    (corpus / "doc3.txt").unlink()
    with pytest.raises(resume.RunConfigChanged, match=r"(?s)data \(its files\).*1 file\(s\) "
                                                      r"gone \(doc3.txt\)"):
        loop.main(dataclasses.replace(cfg, steps=3))


def test_bad_metrics_lines_are_skipped_with_a_warning(tmp_path, rng):
    losses = rng.uniform(1, 3, 3)
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b"".join([
        f'{{"step": 1, "loss": {losses[0]}}}\n'.encode(), b'\xff\xfe{"step": 2}\n',
        b'{"step": "five", "loss": 1.0}\n', f'{{"step": 3, "loss": {losses[1]}}}\n'.encode(),
        b'{"step": 4, "loss": "low"}\n', f'{{"step": 5, "loss": {losses[2]}}}\n'.encode()]))
    with pytest.warns(UserWarning, match=r"skipped 3 line\(s\) .* \(line 2: b'\\xff\\xfe"):
        records = metrics.read_metrics(path)
    assert [(r["step"], r["loss"]) for r in records] == list(zip([1, 3, 5], losses))
    # A torn last line alone (a process killed while writing it): skipped without a word.
    path.write_bytes(path.read_bytes().split(b"\n", 1)[0] + b'\n{"step": 6, "lo')
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [r["step"] for r in metrics.read_metrics(path)] == [1]


def test_another_path_to_the_same_files_is_a_safe_change(tmp_path, rng, monkeypatch):
    """``data`` or ``tokenizer`` respelt (relative -> absolute, the run's own copy of the
    tokenizer) resumes; the same respelling to other files is refused."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "corpus").mkdir()
    for i in range(2):
        (tmp_path / "corpus" / f"d{i}.txt").write_bytes(
            rng.integers(0, 256, 300, dtype=np.uint8).tobytes())
    (tmp_path / "tok.json").write_bytes(rng.integers(0, 256, 500, dtype=np.uint8).tobytes())
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "tokenizer.json").write_bytes((tmp_path / "tok.json").read_bytes())
    base = dataclasses.replace(train_config.TrainConfig(), run_dir="run", data="corpus/*.txt",
                               tokenizer="tok.json")
    saved = resume.run_config(base)
    respelt = dataclasses.replace(base, data=f"{tmp_path}/corpus/*.txt",
                                  tokenizer="run/tokenizer.json")
    assert resume.check(saved, resume.run_config(respelt), "run at step 2") == [
        f"data: 'corpus/*.txt' -> '{tmp_path}/corpus/*.txt'",
        "tokenizer: 'tok.json' -> 'run/tokenizer.json'"]
    (tmp_path / "other.json").write_bytes(rng.integers(0, 256, 500, dtype=np.uint8).tobytes())
    with pytest.raises(resume.RunConfigChanged, match="tokenizer: 'tok.json' .saved. -> "
                                                      "'other.json' .now.: another model"):
        resume.check(saved, resume.run_config(dataclasses.replace(base, tokenizer="other.json")),
                     "run at step 2")
