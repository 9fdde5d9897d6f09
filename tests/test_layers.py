"""The package's layers point one way (docs/ARCHITECTURE.md, "Layers"): checked on every module's imports, read with ast."""

import ast
import os


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "paddlemix")

# What each layer may import from the package, as docs/ARCHITECTURE.md states it. A layer may always
# import itself, except tools: a tool never imports another tool.
ALLOWED = {
    "cli": set(),
    "bird": {"cli"},
    "processors": {"bird", "cli"},
    "datasets": {"bird", "processors", "cli"},
    "models": {"bird", "processors", "cli"},
    "serving": {"bird", "processors", "datasets", "models", "cli"},
    "tools": {"bird", "processors", "datasets", "models", "serving", "cli"},
}
FRAMEWORKS = ("paddle", "paddlenlp")


def module_name(path):
    rel = os.path.relpath(path, ROOT)[: -len(".py")].split(os.sep)
    if rel[-1] == "__init__":
        rel = rel[:-1]
    return ".".join(rel)


def package_modules():
    """``{module name: path}`` of every ``.py`` file under ``paddlemix/``."""
    found = {}
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                found[module_name(path)] = path
    return found


def imports_of(module, path):
    """Every module ``module`` imports, anywhere in the file (a lazy import inside a function is a
    dependency too), with relative imports resolved."""
    tree = ast.parse(open(path, encoding="utf-8").read(), filename=path)
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parent = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{parent}.{base}" if base else parent
            names.add(base)
            # ``from paddlemix.tools import infer`` imports the module paddlemix.tools.infer.
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def layer_of(module):
    """``cli``, ``bird``, ..., ``tools``; None for ``paddlemix`` itself and ``paddlemix.config``."""
    parts = module.split(".")
    if parts[0] != "paddlemix" or len(parts) < 2:
        return None
    return parts[1] if parts[1] in ALLOWED else None


def violations():
    """Sorted ``(importer, imported, why)`` for every import that breaks a layer rule."""
    modules = package_modules()
    found = set()
    for module, path in modules.items():
        own = layer_of(module)
        if own is None:
            continue
        for imported in imports_of(module, path):
            if own == "bird" and imported.split(".")[0] in FRAMEWORKS:
                found.add((module, imported.split(".")[0], "bird/ imports a framework"))
            if imported not in modules:
                continue  # a third-party module, or a name imported from a package module
            target = layer_of(imported)
            if target is None or target == own and own != "tools":
                continue
            if own == target == "tools":
                if imported != "paddlemix.tools" and imported != module:
                    found.add((module, imported, "a tool imports a tool"))
            elif target not in ALLOWED[own]:
                found.add((module, imported, f"{own} may not import {target}"))
    return sorted(found)


def test_the_scanner_sees_relative_and_lazy_imports(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("from ..cli import run\nfrom . import boxes\n\ndef f():\n    import paddle\n")
    got = imports_of("paddlemix.bird.m", str(source))
    assert {"paddlemix.cli", "paddlemix.cli.run", "paddlemix.bird", "paddlemix.bird.boxes", "paddle"} <= got


def test_every_layer_is_scanned():
    layers = {layer_of(m) for m in package_modules()}
    assert set(ALLOWED) <= layers


def test_no_layer_violation():
    found = violations()
    assert not found, "imports against docs/ARCHITECTURE.md's layers:\n" + "\n".join(
        f"  {a} -> {b} ({why})" for a, b, why in found)


def command_lines_outside_tools():
    """Modules outside ``paddlemix.tools`` with a ``main`` function or an ``if __name__ == "__main__"`` block."""
    found = []
    for module, path in sorted(package_modules().items()):
        if module.startswith("paddlemix.tools"):
            continue
        tree = ast.parse(open(path, encoding="utf-8").read(), filename=path)
        for node in tree.body:
            if (isinstance(node, ast.FunctionDef) and node.name == "main") or (
                    isinstance(node, ast.If) and ast.unparse(node.test) == "__name__ == '__main__'"):
                found.append(module)
                break
    return found


def test_every_command_line_lives_in_tools():
    assert command_lines_outside_tools() == []
