"""bird/ is the framework-free task layer: no module under it imports paddle, paddlenlp or a higher layer."""

import ast
from pathlib import Path

import paddlemix.bird

BIRD = Path(paddlemix.bird.__file__).parent
# What bird/ may not import: the frameworks and every layer above it (processors up to tools).
FORBIDDEN = ("paddle", "paddlenlp", "paddlemix.processors", "paddlemix.datasets", "paddlemix.models",
             "paddlemix.serving", "paddlemix.tools")


def imported_modules(source: str, package: str):
    """Every module ``source`` imports, anywhere (lazy imports inside functions too), as absolute names;
    ``package`` is the package the source sits in, for relative imports."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = parts[: len(parts) - node.level + 1]
                yield ".".join(base + ([node.module] if node.module else []))
            else:
                yield node.module


def forbidden(names):
    return [n for n in names if any(n == p or n.startswith(p + ".") for p in FORBIDDEN)]


def test_bird_imports_no_framework_and_no_higher_layer():
    files = sorted(BIRD.rglob("*.py"))
    assert BIRD / "construct" / "build.py" in files  # the walk reaches sub-packages
    bad = []
    for path in files:
        package = ".".join(("paddlemix",) + path.relative_to(BIRD.parent).parts[:-1])
        bad += [f"{path.relative_to(BIRD.parent)}: {n}" for n in forbidden(imported_modules(path.read_text(), package))]
    assert bad == []


def test_the_check_sees_relative_and_lazy_imports():
    source = "from ..processors.chat_template import x\nfrom .boxes import y\ndef f():\n    import paddle\n"
    names = list(imported_modules(source, "paddlemix.bird"))
    assert names == ["paddlemix.processors.chat_template", "paddlemix.bird.boxes", "paddle"]
    assert forbidden(names) == ["paddlemix.processors.chat_template", "paddle"]
