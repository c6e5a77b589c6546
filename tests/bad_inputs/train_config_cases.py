"""Bad training configs and data: every key out of range, files that are no config, data
that is empty, of the wrong type or beyond the vocabulary. Each is found before anything
compiles (``config_checks``, ``presets.read``, ``data.sources``/``pipeline``)."""
from __future__ import annotations

import tempfile
import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np

from tests.bad_inputs.case import BadInput
from tnl_jax import data
from tnl_jax.data import sources
from tnl_jax.tokenizers import get_tokenizer
from tnl_jax.training import config as train_config
from tnl_jax.training import config_checks, optim, sharding

BYTES = get_tokenizer("bytes")  # vocab_size 259, eos 258


def load(*overrides: str) -> Callable[[], Any]:
    return lambda: train_config.load(None, list(overrides))


def key_row(overrides: str, *says: str) -> BadInput:
    """A row loading the default preset with space-separated ``overrides``."""
    return BadInput(f"config: {overrides}", load(*overrides.split()), ValueError, says)


def random_ids(name: str, count: int, high: int = 256) -> np.ndarray:
    """Fresh random token ids (a generator seeded by the row's name), no EOS among them."""
    return np.random.default_rng(zlib.crc32(name.encode())).integers(0, high, count)


def in_files(files: dict[str, Any], call: Callable[[Path], Any]) -> Callable[[], Any]:
    """``call(folder)`` with ``files`` written in a fresh temporary folder (an array is
    saved as .npy, a string as text, None makes a folder)."""
    def run():
        with tempfile.TemporaryDirectory(prefix="tnl-bad-input-") as folder:
            root = Path(folder)
            for name, content in files.items():
                if content is None:
                    (root / name).mkdir()
                elif isinstance(content, np.ndarray):
                    np.save(root / name, content)
                else:
                    (root / name).write_text(content)
            return call(root)
    return run


def spec(source: str, **changes: Any) -> data.DataSpec:
    return data.DataSpec(**{**dict(source=source, seq_len=16, batch_size=2, seed=0,
                                   tokenizer=BYTES, eval_fraction=0.02), **changes})


def train_on(pattern: str, **changes: Any) -> Callable[[Path], Any]:
    return lambda root: data.train_batches(spec(str(root / pattern), **changes))


def evaluate_on(pattern: str, count: int = 1, **changes: Any) -> Callable[[Path], Any]:
    return lambda root: data.eval_batches(spec(str(root / pattern), **changes), count)


def load_file(name: str) -> Callable[[Path], Any]:
    return lambda root: train_config.load(str(root / name))


def eos_stream(name: str, lengths: list[int]) -> np.ndarray:
    """Documents of the given lengths (EOS included), random ids, as one int32 stream."""
    documents = [np.append(random_ids(f"{name}{i}", n - 1), BYTES.eos_id)
                 for i, n in enumerate(lengths)]
    return np.concatenate(documents).astype(np.int32)


RANGES = [
    key_row("steps=0", "steps=0", "integer in [1, 2147483647]"),
    key_row("steps=-5", "steps=-5", "integer in [1, 2147483647]"),
    key_row("seq_len=0", "seq_len=0", "integer >= 1"),
    key_row("batch_size=0", "batch_size=0", "integer >= 1"),
    key_row("grad_accum=0", "grad_accum=0", "integer >= 1"),
    key_row(f"steps={2**40}", f"steps={2**40}", "integer in [1, 2147483647]",
            "the step counter is int32"),
    key_row(f"warmup={2**31}", f"warmup={2**31}", "integer in [0, 2147483647]"),
    key_row("run_dir=null", "run_dir: expected a string, got null"),
    key_row("tokenizer=true", "tokenizer: expected a string, got True"),
    key_row("grad_accum=3", "batch_size=16 must divide by grad_accum (3)"),
    key_row("checkpoint_every=0", "checkpoint_every=0", "integer >= 1"),
    key_row("log_every=0", "log_every=0", "integer >= 1"),
    key_row("keep_checkpoints=0", "keep_checkpoints=0", "integer >= 1"),
    key_row("eval_every=-1", "eval_every=-1", "integer >= 0"),
    key_row("eval_batches=0", "eval_batches=0 with eval_every=50", "eval_every=0 for none"),
    key_row("lr=-0.001", "lr=-0.001", "finite number > 0"),
    key_row("lr=.nan", "lr=nan", "finite number > 0"),
    key_row("lr=.inf", "lr=inf", "finite number > 0"),
    key_row("min_lr_ratio=1.5", "min_lr_ratio=1.5", "in [0, 1]"),
    key_row("warmup=-1", "warmup=-1", "integer in [0, 2147483647]"),
    key_row("weight_decay=-0.1", "weight_decay=-0.1", "finite number >= 0"),
    key_row("weight_decay=.nan", "weight_decay=nan", "finite number >= 0"),
    key_row("beta1=1.0", "beta1=1.0", "in [0, 1)"),
    key_row("beta2=-0.5", "beta2=-0.5", "in [0, 1)"),
    key_row("grad_clip=-1", "grad_clip=-1.0", "finite number >= 0", "0: no clipping"),
    key_row("grad_clip=.inf", "grad_clip=inf", "finite number >= 0"),
    key_row("eval_fraction=1", "eval_fraction=1.0", "in [0, 1)"),
    key_row("eval_fraction=-0.1", "eval_fraction=-0.1", "in [0, 1)"),
    key_row("shuffle_window=-1", "shuffle_window=-1", "integer >= 0"),
    key_row("seed=-1", "seed=-1", "integer >= 0"),
    key_row("seed=4294967296", "seed=4294967296", "below 2**32"),
    key_row("sample_tokens=-1", "sample_tokens=-1", "integer >= 0"),
    key_row("sample_prompt= sample_tokens=5", "sample_prompt=''", "sample_tokens=0"),
    key_row("run_dir=", "run_dir=''", "non-empty string"),
    key_row("init_from=", "init_from=''", "non-empty string or null"),
    key_row("data=", "data=''", "non-empty string"),
    key_row("loss_chunk_tokens=-2", "loss_chunk_tokens=-2", "0 (unchunked) or -1"),
    key_row("grad_reduce_dtype=float16", "grad_reduce_dtype='float16'", "float32, bfloat16"),
    key_row("loss_kernel=fast", "loss_kernel='fast'", "'auto', 'chunked', 'grads_in_forward'"),
    key_row("mesh.fsdp=0", "mesh.fsdp=0", "positive or -1"),
    key_row("mesh.data=-2", "mesh.data=-2", "positive or -1"),
    key_row("mesh.data=-1 mesh.fsdp=-1", "'data': -1, 'fsdp': -1", "at most one axis may be -1"),
    key_row("mesh.data=3", "batch_size=16 must divide by mesh.data x mesh.fsdp (3)"),
    key_row("mesh.data=-1 mesh.fsdp=3", "batch_size=16 must divide by mesh.data x mesh.fsdp (3)"),
    key_row("mesh.context=3", "seq_len=128 must divide by mesh.context (3)"),
    key_row("lr=-1 steps=0 beta2=1", "3 problems", "lr=-1.0", "steps=0", "beta2=1.0"),
    key_row("lr=[1", "lr=[1", "not valid YAML"),
    BadInput("config: a TrainConfig built in code is checked too",
             lambda: train_config.check(train_config.TrainConfig(steps=2.5, lr=float("nan"))),
             ValueError, ("steps=2.5: expected an integer", "lr=nan")),
    BadInput("config: training starts with the checks, before anything compiles",
             lambda: __import__("tnl_jax.training.loop", fromlist=["main"]).main(
                 train_config.TrainConfig(keep_checkpoints=0)),
             ValueError, ("keep_checkpoints=0",)),
    BadInput("config: adamw checks its numbers",
             lambda: optim.adamw({}, {}, lr=1e-3, warmup=1, steps=10, min_lr_ratio=0.1,
                                 weight_decay=0.1, beta1=0.9, beta2=1.0, grad_clip=1.0),
             ValueError, ("adamw: beta2=1.0", "in [0, 1)")),
    BadInput("config: mesh sizes that need other devices",
             lambda: sharding.mesh_shape(2, 2, 1, 1, 8), ValueError, ("needs 4 devices, have 8",)),
    BadInput("config: a batch the processes' row groups do not split",
             lambda: config_checks.raise_problems(config_checks.batch_split_problems(
                 6, 8, 1, batch_shards=2, seq_shards=1, process_groups=4)),
             ValueError, ("batch_size=6", "row groups x grad_accum (4 x 1)")),
]

FILES = [
    BadInput("config: a YAML file whose top level is a list",
             in_files({"run.yaml": "- steps: 3\n- lr: 1e-3\n"}, load_file("run.yaml")),
             ValueError, ("run.yaml", "top level must be a mapping", "list")),
    BadInput("config: a YAML file whose top level is a string",
             in_files({"run.yaml": "just some words\n"}, load_file("run.yaml")),
             ValueError, ("run.yaml", "top level must be a mapping", "str")),
    BadInput("config: a YAML file that does not parse",
             in_files({"run.yaml": "steps: [1, 2\nlr: 3\n"}, load_file("run.yaml")),
             ValueError, ("run.yaml", "not valid YAML", "line")),
    BadInput("config: a config file that does not exist",
             in_files({}, load_file("missing.yaml")), FileNotFoundError, ("missing.yaml",)),
    BadInput("config: a config path that is a directory",
             in_files({"configs": None}, load_file("configs")), ValueError,
             ("configs", "is not a file")),
    BadInput("config: a misspelt key in a YAML file",
             in_files({"run.yaml": "stpes: 3\n"}, load_file("run.yaml")), ValueError,
             ("run.yaml", "unknown config key 'stpes'", "nearest valid key: 'steps'")),
    BadInput("config: an out-of-range value in a YAML file",
             in_files({"run.yaml": "log_every: 0\n"}, load_file("run.yaml")), ValueError,
             ("run.yaml", "log_every=0", "integer >= 1")),
]

DATA = [
    BadInput("data: a glob that matches no file",
             in_files({}, train_on("corpus/*.txt")), FileNotFoundError,
             ("data=", "corpus/*.txt", "no file matches")),
    BadInput("data: an eval_data glob that matches no file",
             in_files({"a.txt": "some text to train on"},
                      lambda root: data.eval_batches(spec(str(root / "a.txt"),
                                                          eval_source=str(root / "b*.txt")), 1)),
             FileNotFoundError, ("eval_data=", "b*.txt", "no file matches")),
    BadInput("data: a glob that matches only directories",
             in_files({"corpus": None}, train_on("corpus")), FileNotFoundError,
             ("data=", "matches only directories", "corpus/**/*.txt")),
    BadInput("data: a float .npy token file",
             in_files({"tokens.npy": random_ids("float", 64).astype(np.float32)},
                      train_on("*.npy")),
             ValueError, ("tokens.npy", "must be integers", "float32")),
    BadInput("data: a .npy token id beyond the model's vocabulary",
             in_files({"tokens.npy": np.append(random_ids("beyond", 40), 300)},
                      train_on("*.npy", vocab_size=259)),
             ValueError, ("tokens.npy", "token id 300 at position 40", "vocab_size=259")),
    BadInput("data: a .npy token id beyond the tokenizer's vocabulary by default",
             in_files({"tokens.npy": np.append(random_ids("tokenizer", 9), 259)},
                      train_on("*.npy")),
             ValueError, ("tokens.npy", "token id 259", "vocab_size=259")),
    BadInput("data: a negative .npy token id",
             in_files({"tokens.npy": np.append(random_ids("negative", 7), -1)},
                      train_on("*.npy")),
             ValueError, ("tokens.npy", "token id -1 at position 7", "[0, 259)")),
    BadInput("data: a 2-D .npy token file",
             in_files({"tokens.npy": random_ids("2d", 64).reshape(8, 8)}, train_on("*.npy")),
             ValueError, ("tokens.npy", "1-D token stream", "(8, 8)")),
    BadInput("data: a .npy file that is no array",
             in_files({"tokens.npy": "not an array"}, train_on("*.npy")),
             ValueError, ("tokens.npy", "not a readable .npy token stream")),
    BadInput("data: a corpus of empty text files",
             in_files({"a.txt": "", "b.txt": "", "c.txt": ""}, train_on("*.txt")),
             ValueError, ("data=", "no training document with at least 2 tokens", "empty")),
    BadInput("data: a token stream of lone EOS tokens",
             in_files({"tokens.npy": np.full(5, BYTES.eos_id, np.int32)}, train_on("*.npy")),
             ValueError, ("data=", "no training document with at least 2 tokens")),
    BadInput("data: no held-out document (eval on)",
             in_files({"tokens.npy": eos_stream("held", [40, 30, 50])},
                      evaluate_on("*.npy", eval_fraction=0.0)),
             ValueError, ("no held-out set", "eval_fraction=0.0", "eval_data=", "eval_every=0")),
    BadInput("data: eval_data of empty files",
             in_files({"a.txt": "some text to train on", "held.txt": ""},
                      lambda root: data.eval_batches(spec(str(root / "a.txt"),
                                                          eval_source=str(root / "held.txt")), 1)),
             ValueError, ("eval_data=", "held.txt", "no document with at least 2 tokens")),
    BadInput("data: token shards mixed with text",
             in_files({"a.npy": eos_stream("mixed", [20]), "b.txt": "text"}, train_on("*")),
             ValueError, ("mixes token shards", ".npy", ".txt")),
    BadInput("data: mqar beyond a small vocabulary",
             lambda: data.train_batches(spec("mqar", seq_len=511, vocab_size=384)),
             ValueError, ("data='mqar'", "model.vocab_size >= 514", "vocab_size=384")),
    BadInput("data: mqar rows too short for one example",
             lambda: data.train_batches(spec("mqar", seq_len=2)),
             ValueError, ("data='mqar'", "seq_len >= 63", "seq_len=2")),
    BadInput("data: an unknown split",
             lambda: sources.open_documents("stdlib", "test", BYTES, 0.02, 16),
             ValueError, ("split='test'", "'train', 'eval', 'all'")),
]


def _array_record(records: list[bytes]) -> Callable[[Path], Any]:
    """Writes ``records`` to ``docs.array_record`` and reads its first document."""
    def run(root: Path):
        from array_record.python.array_record_module import ArrayRecordWriter
        writer = ArrayRecordWriter(str(root / "docs.array_record"), "group_size:1")
        for record in records:
            writer.write(record)
        writer.close()
        return data.documents(spec(str(root / "docs.array_record"), eval_fraction=0.0),
                              "train")[0]
    return run


DATA += [
    BadInput("data: an ArrayRecord token id beyond the vocabulary",
             in_files({}, _array_record([np.append(random_ids("record", 5), 4000)
                                         .astype(np.int32).tobytes()])),
             ValueError, ("record 0", "token id 4000 at position 5", "vocab_size=259")),
    BadInput("data: an ArrayRecord record that is not int32 tokens",
             in_files({}, _array_record([b"\x01\x02\x03"])),
             ValueError, ("record 0", "3 bytes", "int32")),
]

class TextTokenizer:
    """A text tokenizer (no ``encode_bytes``): reads UTF-8 text, ids are code points."""
    vocab_size, pad_id, bos_id, eos_id = 0x110000, None, None, None

    def encode(self, text: str) -> list[int]:
        return [ord(c) for c in text]


def latin1_text(name: str) -> str:
    """Fresh random words with a Latin-1 byte among them (written as text below)."""
    words = [bytes((random_ids(f"{name}{i}", 5, 26) + 97).astype(np.uint8)).decode()
             for i in range(8)]
    return " ".join(words) + " caf\xe9\n"


def _write_latin1(root: Path, name: str) -> Path:
    path = root / name
    path.write_bytes(latin1_text(name).encode("latin-1"))
    return path


EDGES = [
    key_row("optim.lr=0.1", "unknown config key 'optim.lr'", "nearest valid key: 'lr'"),
    key_row("mesh.data.x=1", "'mesh.data' is a value, not a group", "mesh.data=<value>"),
    key_row("model.vocab_size=100", "model.pad_token_id=256", "vocab_size=100"),
    key_row("model.dtype=int8", "model.dtype='int8': expected the name of a floating-point"),
    key_row("model.decoder_layers=0 model.vocab_size=-1", "model.vocab_size=-1",
            "model.decoder_layers=0: expected an integer >= 1"),
    key_row("model.vocab_size=200 model.pad_token_id=null model.bos_token_id=null "
            "model.eos_token_id=null", "tokenizer 'bytes' has 259 ids",
            "expected model.vocab_size >= 259", "set model.vocab_size=259 or more"),
    BadInput("config: tokenizer= a missing file", load("tokenizer=/nonexistent/tok.model"),
             FileNotFoundError, ("tokenizer='/nonexistent/tok.model': no such file",)),
    BadInput("config: tokenizer= a file that is no tokenizer",
             in_files({"tok.model": "not a model"},
                      lambda root: train_config.load(None, [f"tokenizer={root}/tok.model"])),
             ValueError, ("tok.model", "is not a readable SentencePiece file")),
    BadInput("config: a key given twice in a YAML file",
             in_files({"run.yaml": "steps: 5\nlr: 0.001\nsteps: 7\n"}, load_file("run.yaml")),
             ValueError, ("run.yaml", "the key 'steps' is given twice (lines 1 and 3)")),
    BadInput("config: a key given twice in the model mapping",
             in_files({"run.yaml": "model:\n  glu_dim: 64\n  glu_dim: 32\n"},
                      load_file("run.yaml")),
             ValueError, ("run.yaml", "the key 'glu_dim' is given twice (lines 2 and 3)")),
    BadInput("data: non-UTF-8 text for a text tokenizer",
             in_files({}, lambda root: sources.encode_bytes(
                 TextTokenizer(), _write_latin1(root, "a.txt").read_bytes(),
                 str(root / "a.txt"))), ValueError,
             (f"a.txt: not UTF-8 text (byte {latin1_text('a.txt').index(chr(0xe9))}: "
              f"b'\\xe9\\n')", "tokenizer=bytes")),
    BadInput("data: a .npz token archive",
             in_files({}, lambda root: (np.savez(root / "tokens.npz", random_ids("npz", 9)),
                                        train_on("*.npz")(root))),
             ValueError, ("data=", "tokens.npz", "a .npz archive is not read", "np.save")),
]

CASES = RANGES + FILES + DATA + EDGES
