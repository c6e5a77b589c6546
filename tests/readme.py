"""The README's Python examples, so that tests run them as written."""
import re

from tests.paths import ROOT


def python_blocks(heading: str) -> list[str]:
    """The ```python blocks of the README section that starts at ``heading`` (a line
    ``## heading``), up to the next section."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def run_python_blocks(heading: str) -> dict:
    """Runs the section's blocks in order in one namespace, and returns it."""
    namespace: dict = {}
    for block in python_blocks(heading):
        exec(compile(block, "README.md", "exec"), namespace)
    return namespace
