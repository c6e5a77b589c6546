"""Paths the tests use, from the repository root (no test depends on the working directory)."""
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# A random TNL in the published Hugging Face layout, with the published code's logits.
PUBLISHED = ROOT / "tests" / "checkpoints" / "tnl_tiny_published"
