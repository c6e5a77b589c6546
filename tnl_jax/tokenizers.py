"""Tokenizers behind one small interface: ``encode(str) -> list[int]``,
``decode(list[int]) -> str``, ``vocab_size``, ``pad_id``, ``bos_id``, ``eos_id``.

* ``"bytes"`` (default): UTF-8 bytes are ids 0-255; pad 256, bos 257, eos 258
  (``vocab_size`` 259; the tnl-tiny preset has 384 embedding rows for alignment).
  Files are read as bytes (``encode_bytes``: any encoding, each byte its id); ids past
  255 decode to nothing; invalid UTF-8 decodes to U+FFFD.
* a SentencePiece ``*.model`` file (the published TNL checkpoints' Baichuan model);
* a Hugging Face ``tokenizers`` ``*.json`` file;
* a directory holding ``tokenizer.model`` or ``tokenizer.json``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Protocol

from tnl_jax.model.config import ModelConfig

TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json")  # What a checkpoint directory may hold.


class Tokenizer(Protocol):
    vocab_size: int
    pad_id: int | None
    bos_id: int | None
    eos_id: int | None

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


class BytesTokenizer:
    vocab_size = 259
    pad_id, bos_id, eos_id = 256, 257, 258

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def encode_bytes(self, raw: bytes) -> list[int]:
        """The ids of raw bytes (a file's, in any encoding): each byte is its id."""
        return list(raw)

    def decode(self, ids: list[int]) -> str:
        return bytes(i for i in ids if 0 <= i < 256).decode("utf-8", errors="replace")


class SentencePieceTokenizer:
    def __init__(self, path: str | Path):
        import sentencepiece
        self.model = sentencepiece.SentencePieceProcessor(model_file=str(path))
        self.vocab_size = self.model.get_piece_size()
        special = lambda i: None if i < 0 else i
        self.pad_id = special(self.model.pad_id())
        self.bos_id = special(self.model.bos_id())
        self.eos_id = special(self.model.eos_id())

    def encode(self, text: str) -> list[int]:
        return list(self.model.encode(text))

    def decode(self, ids: list[int]) -> str:
        return self.model.decode([int(i) for i in ids])


class HFTokenizer:
    """A ``tokenizers`` JSON file; special ids are looked up by their usual names."""
    NAMES = {"pad_id": ("<pad>", "[PAD]", "<|pad|>"),
             "bos_id": ("<s>", "<bos>", "[CLS]", "<|startoftext|>"),
             "eos_id": ("</s>", "<eos>", "[SEP]", "<|endoftext|>")}

    def __init__(self, path: str | Path):
        import tokenizers
        self.model = tokenizers.Tokenizer.from_file(str(path))
        self.vocab_size = self.model.get_vocab_size()
        for attr, names in self.NAMES.items():
            ids = [self.model.token_to_id(n) for n in names]
            setattr(self, attr, next((i for i in ids if i is not None), None))

    def encode(self, text: str) -> list[int]:
        return self.model.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self.model.decode([int(i) for i in ids])


def get_tokenizer(kind_or_path: str = "bytes", model_cfg: ModelConfig | None = None) -> Tokenizer:
    """The tokenizer ``kind_or_path`` names; with ``model_cfg``, checks that its ids fit
    the model's vocabulary."""
    if kind_or_path == "bytes":
        tokenizer: Tokenizer = BytesTokenizer()
    else:
        path = Path(kind_or_path).expanduser()
        if path.is_dir():
            found = [path / name for name in TOKENIZER_FILES if (path / name).exists()]
            if not found:
                raise FileNotFoundError(f"tokenizer={kind_or_path!r}: the folder holds no "
                                        f"{' or '.join(TOKENIZER_FILES)}")
            path = found[0]
        if not path.exists():
            raise FileNotFoundError(f"tokenizer={kind_or_path!r}: no such file (expected "
                                    f"'bytes', a SentencePiece .model, a tokenizers .json or "
                                    f"a folder holding {' or '.join(TOKENIZER_FILES)})")
        kinds = {".model": SentencePieceTokenizer, ".json": HFTokenizer}
        formats = {".model": "SentencePiece", ".json": "tokenizers"}
        if path.suffix not in kinds:
            raise ValueError(f"tokenizer {kind_or_path!r}: expected 'bytes', a SentencePiece "
                             ".model or a tokenizers .json file")
        try:
            tokenizer = kinds[path.suffix](path)
        except ImportError:
            raise
        except Exception as error:  # Each library's own error for a file it cannot read.
            raise ValueError(f"tokenizer={kind_or_path!r}: {path} is not a readable "
                             f"{formats[path.suffix]} file ({type(error).__name__}: "
                             f"{str(error).splitlines()[0] if str(error) else ''})") from None
    if model_cfg is not None:
        check_fits(tokenizer, kind_or_path, model_cfg.vocab_size)
    return tokenizer


def check_fits(tokenizer: Tokenizer, name: str, vocab_size: int,
               fix: str = "use the tokenizer the model was trained with") -> None:
    """Every id the tokenizer makes must be a row of the model's embedding: else its
    tokens would look up nothing (NaN logits) instead of text. ``fix`` says what to do."""
    if tokenizer.vocab_size > vocab_size:
        raise ValueError(f"tokenizer {name!r} has {tokenizer.vocab_size} ids (0 to "
                         f"{tokenizer.vocab_size - 1}) but the model's vocab_size is "
                         f"{vocab_size}: expected model.vocab_size >= {tokenizer.vocab_size}; "
                         f"{fix}")
