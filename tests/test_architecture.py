"""The package's architecture as tests: no Qt in the core, no private names across modules,
no import cycle, no long file, no long function.
"""

import ast
import subprocess
import sys
from pathlib import Path

import napari_unet

ROOT = Path(__file__).resolve().parents[1]
PKG = Path(napari_unet.__file__).resolve().parent
GUI = ("napari", "qtpy", "superqt", "PyQt6", "PyQt5", "PySide2", "PySide6", "magicgui")
MAX_LINES = 400
MAX_FUNCTION_LINES = 60
#: Functions left longer than MAX_FUNCTION_LINES, ``"<file in the package>:<qualified name>"``
#: -> why. Keep it short: an entry whose function got short (or went) must leave the list.
LONG_FUNCTIONS = {
    "training/loop.py:finetune_round": "a 30-line NumPy docstring over a body of ~30 lines, "
                                       "one helper call per stage of the round",
}


def _modules() -> dict[str, Path]:
    """Every module of the package: dotted name -> file."""
    out = {}
    for f in sorted(PKG.rglob("*.py")):
        parts = list(f.relative_to(PKG.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


MODULES = _modules()
CORE = sorted(m for m in MODULES if not m.startswith("napari_unet._qt"))


def _imports(name: str, top_level_only: bool) -> list[tuple[str, list[str], int]]:
    """``(module, imported names, line)`` of each import of the package in module ``name``.

    ``top_level_only``: only the imports that run when the module is imported (not those
    in functions or under ``if TYPE_CHECKING``).
    """
    file = MODULES[name]
    tree = ast.parse(file.read_text(), str(file))
    package = name if file.name == "__init__.py" else name.rpartition(".")[0]
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    if top_level_only:  # also the bodies of top-level try/if, except TYPE_CHECKING blocks
        nodes = [n for n in tree.body if not isinstance(n, ast.If)] + [
            s for n in tree.body if isinstance(n, ast.If) and "TYPE_CHECKING" not in ast.unparse(n.test)
            for s in n.body]
    found = []
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.split(".")[0] == "napari_unet":
                found.append((mod, [a.name for a in node.names], node.lineno))
        elif isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names
                      if a.name.split(".")[0] == "napari_unet"]
    return found


def test_every_core_module_imports_with_gui_packages_blocked():
    code = f"""
import importlib, importlib.abc, sys
BLOCKED = {GUI!r}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{{name}} is blocked: a core module imported it")
sys.meta_path.insert(0, Block())
for name in {CORE!r}:
    importlib.import_module(name)
print(len({CORE!r}))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert int(r.stdout.split()[-1]) == len(CORE) > 30


def test_no_private_name_is_imported_from_another_module():
    bad = []
    for name in MODULES:
        for mod, names, line in _imports(name, top_level_only=False):
            for n in names:
                private = n.startswith("_") and not (n.startswith("__") and n.endswith("__"))
                if private and f"{mod}.{n}" not in MODULES:  # private modules may be imported
                    bad.append(f"{MODULES[name].relative_to(ROOT)}:{line} imports {mod}.{n}")
    for folder in ("benchmarks", "scripts"):  # and the repository's own tools
        for f in sorted((ROOT / folder).glob("*.py")):
            for node in ast.walk(ast.parse(f.read_text())):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("napari_unet"):
                    bad += [f"{f.relative_to(ROOT)}:{node.lineno} imports {node.module}.{a.name}"
                            for a in node.names if a.name.startswith("_")
                            and f"{node.module}.{a.name}" not in MODULES]
    assert not bad, "\n".join(bad)


def test_no_import_cycle_at_module_level():
    graph = {}
    for name in MODULES:
        deps = set()
        for mod, names, _ in _imports(name, top_level_only=True):
            deps |= {f"{mod}.{n}" for n in names if f"{mod}.{n}" in MODULES} or {mod}
            deps.add(mod)
        graph[name] = {d for d in deps if d in MODULES and d != name}
    # a package's __init__ importing nothing of its own is what keeps this meaningful
    state: dict[str, int] = {}
    cycles = []

    def visit(node, stack):
        state[node] = 1
        for dep in sorted(graph[node]):
            if dep.startswith(node + "."):
                continue  # importing a submodule imports its package first: not a cycle
            if state.get(dep) == 1:
                cycles.append(" -> ".join(stack[stack.index(dep):] + [dep]))
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, "\n".join(cycles)


def test_every_file_is_at_most_400_lines():
    files = [*PKG.rglob("*.py"), *(ROOT / "tests").rglob("*.py"), *(ROOT / "benchmarks").glob("*.py"),
             *(ROOT / "scripts").glob("*.py"), *(ROOT / "docs").glob("*.py")]
    long = [f"{f.relative_to(ROOT)}: {n} lines" for f in files
            if (n := len(f.read_text().splitlines())) > MAX_LINES]
    assert not long, "\n".join(long)


def test_the_gui_is_only_under_qt():
    """Only ``_qt`` imports the GUI packages (``_sample_data`` returns plain layer tuples)."""
    bad = []
    for name in CORE:
        tree = ast.parse(MODULES[name].read_text())
        hints = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                 and "TYPE_CHECKING" in ast.unparse(block.test) for s in block.body for n in ast.walk(s)}
        for node in ast.walk(tree):
            if id(node) in hints:  # annotations only
                continue
            mods = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                    [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            bad += [f"{name} imports {m}" for m in mods if m.split(".")[0] in GUI]
    assert not bad, "\n".join(bad)


def _function_lengths() -> dict[str, int]:
    """``"<file>:<qualified name>"`` -> lines (``end_lineno - lineno + 1``) of every function."""
    out = {}

    def visit(node: ast.AST, file: str, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = prefix + child.name
                if not isinstance(child, ast.ClassDef):
                    out[f"{file}:{name}"] = child.end_lineno - child.lineno + 1
                visit(child, file, name + ".")
            else:
                visit(child, file, prefix)

    for f in sorted(PKG.rglob("*.py")):
        visit(ast.parse(f.read_text()), f.relative_to(PKG).as_posix(), "")
    return out


def test_every_function_is_at_most_60_lines():
    lengths = _function_lengths()
    long = [f"{name}: {n} lines" for name, n in lengths.items()
            if n > MAX_FUNCTION_LINES and name not in LONG_FUNCTIONS]
    assert not long, "split these (or, with a reason, add them to LONG_FUNCTIONS):\n" + "\n".join(long)
    stale = [name for name in LONG_FUNCTIONS if lengths.get(name, 0) <= MAX_FUNCTION_LINES]
    assert not stale, "no longer long (or gone), remove from LONG_FUNCTIONS: " + ", ".join(stale)
