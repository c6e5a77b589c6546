"""The benchmarks' layout: packages by topic imported by absolute name, no import
circle, no ``sys.path`` edits, and every ``python -m benchmarks...`` command in the
docs names a module that exists."""
import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = ROOT / "benchmarks"


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def benchmark_imports(path: Path, modules: set[str]) -> set[str]:
    """The modules of ``modules`` that ``path`` imports, anywhere in the file (function
    bodies too): ``from benchmarks.quality import quality_plots`` imports the module
    ``benchmarks.quality.quality_plots``, ``from benchmarks.common.timing import timed_ms``
    the module ``benchmarks.common.timing``."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules
                      else node.module for a in node.names}
    return found & modules


def test_no_import_circle_and_no_sys_path_edits():
    modules = {module_name(p): p for p in BENCHMARKS.rglob("*.py")}
    graph = {name: benchmark_imports(path, set(modules)) for name, path in modules.items()}
    assert graph["benchmarks.quality.quality_report"], "the graph lost the quality imports"
    for name, path in modules.items():
        assert "sys.path" not in path.read_text(), f"{name} edits sys.path"

    def visit(name: str, trail: tuple[str, ...]) -> None:
        assert name not in trail, f"import circle: {' -> '.join(trail + (name,))}"
        for dep in graph[name]:
            visit(dep, trail + (name,))
    for name in graph:
        visit(name, ())


def test_documented_commands_name_existing_modules():
    docs = [ROOT / "README.md", BENCHMARKS / "README.md", BENCHMARKS / "RESULTS.md",
            *sorted((ROOT / "docs").glob("*.md"))]
    named = {m for doc in docs for m in re.findall(r"python3? -m (benchmarks(?:\.\w+)+)", doc.read_text())}
    assert len(named) > 10, named
    missing = sorted(m for m in named if not (ROOT / (m.replace(".", "/") + ".py")).exists())
    assert not missing, f"commands name modules that do not exist: {missing}"
