"""The layout's rules (README, "Layout"): imports point down, nothing reads another
module's private names, and files, functions and parameter lists stay small."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "pesigitg"
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 60
MAX_PARAMETERS = 6

# Each layer may import itself and the layers after it in this list, nothing before.
LAYERS = ("pesigitg.demo", "pesigitg.testing", "pesigitg.backend", "pesigitg.ctl",
          "pesigitg.daemon", "pesigitg.routing", "pesigitg.ebpf", "pesigitg._fastpath")
# Modules below every layer: any layer may import them.
BASE = {"pesigitg", "pesigitg.errors", "pesigitg.paths", "pesigitg.configfile",
        "pesigitg.quiclb"}
# Allowed exceptions to "the layers after it", each with its reason.
SIDEWAYS = {
    ("pesigitg.ctl", "pesigitg.daemon.api"): "ctl may use the daemon's API",
}


@dataclass(frozen=True)
class Import:
    source: str             # importing module
    target: str             # imported module
    line: int
    in_function: bool


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def resolve(name: str, known: dict[str, Path]) -> str | None:
    """``name`` or the nearest package above it that is a pesigitg module."""
    while name:
        if name in known or name == "pesigitg._fastpath":
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(name: str, path: Path, known: dict[str, Path]) -> list[Import]:
    tree = ast.parse(path.read_text(), str(path))
    found: list[Import] = []

    def visit(node: ast.AST, in_function: bool, type_checking: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            guarded = type_checking or (isinstance(child, ast.If)
                                        and "TYPE_CHECKING" in ast.unparse(child.test))
            targets: list[str] = []
            if isinstance(child, ast.Import):
                targets = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                targets = [f"{child.module}.{a.name}" if f"{child.module}.{a.name}" in known
                           else child.module for a in child.names]
            for target in targets:
                resolved = resolve(target, known)
                if resolved and resolved != name and not guarded:
                    found.append(Import(name, resolved, getattr(child, "lineno", 0), inner))
            visit(child, inner, guarded)

    visit(tree, False, False)
    return found


def all_imports() -> list[Import]:
    known = modules()
    return [i for name, path in known.items() for i in imports_of(name, path, known)]


def layer(name: str) -> str | None:
    return next((lay for lay in LAYERS if name == lay or name.startswith(lay + ".")), None)


def test_the_import_graph_has_no_cycle_even_through_imports_inside_functions():
    graph: dict[str, set[str]] = {}
    for i in all_imports():
        graph.setdefault(i.source, set()).add(i.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def connect(node: str) -> None:     # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    assert not cycles, f"import cycles: {cycles}"


def test_imports_point_down_the_layers():
    wrong = []
    for i in all_imports():
        source, target = layer(i.source), layer(i.target)
        if i.target in BASE or source is None or target is None:
            continue
        if LAYERS.index(target) < LAYERS.index(source) and \
                (source, i.target) not in SIDEWAYS:
            wrong.append(f"{i.source}:{i.line} imports {i.target}")
        if source != target and (source, target) in {
                ("pesigitg.ctl", "pesigitg.daemon")} and (source, i.target) not in SIDEWAYS:
            wrong.append(f"{i.source}:{i.line} imports {i.target}")
    assert not wrong, "\n".join(wrong)


def test_ebpf_knows_nothing_of_pesigitg_above_it():
    wrong = [f"{i.source}:{i.line} imports {i.target}" for i in all_imports()
             if layer(i.source) == "pesigitg.ebpf" and layer(i.target) != "pesigitg.ebpf"
             and i.target != "pesigitg.errors"]
    assert not wrong, "\n".join(wrong)


def test_the_base_modules_import_only_each_other():
    wrong = [f"{i.source}:{i.line} imports {i.target}" for i in all_imports()
             if i.source in BASE - {"pesigitg", "pesigitg.quiclb"} and i.target not in BASE]
    assert not wrong, "\n".join(wrong)


# -- private names ----------------------------------------------------------------------------

def defined_private_names(tree: ast.AST) -> set[str]:
    """Private names a module defines: functions, classes, assignments, attributes of
    self or cls."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
    return {n for n in names if n.startswith("_")}


# Private attributes of third-party classes ours subclass, which those subclasses use.
THIRD_PARTY = {"_quic": "aioquic's QuicConnectionProtocol",
               "_transport": "aioquic's QuicConnectionProtocol"}


def private_names_by_module() -> dict[Path, set[str]]:
    return {p: defined_private_names(ast.parse(p.read_text(), str(p)))
            for p in PACKAGE.rglob("*.py")}


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(
    p.relative_to(ROOT)))
def test_no_module_reads_another_modules_private_names(path):
    """A private name used here is defined here, or is not pesigitg's (the aioquic
    integration reads aioquic's internals on purpose: see pesigitg/backend/aioquic.py)."""
    by_module = private_names_by_module()
    own = by_module[path]
    others = set().union(*(names for p, names in by_module.items() if p != path)) \
        - set(THIRD_PARTY)
    tree = ast.parse(path.read_text(), str(path))
    wrong = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module != "__future__":
            wrong += [f"{path.name}:{node.lineno} imports {a.name}" for a in node.names
                      if a.name.startswith("_") and not a.name.startswith("__")
                      and (node.module or "").startswith("pesigitg")
                      and not (node.module or "").startswith("pesigitg._fastpath")]
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and \
                not node.attr.startswith("__") and node.attr in others - own:
            wrong.append(f"{path.name}:{node.lineno} reads {ast.unparse(node)}")
    assert not wrong, "\n".join(wrong)


# -- sizes --------------------------------------------------------------------------------------

def code_files() -> list[Path]:
    found = [*PACKAGE.rglob("*.py"), *PACKAGE.rglob("*.pyx"), *PACKAGE.rglob("*.pxi"),
             *(ROOT / "benchmarks").glob("*.py"), ROOT / "setup.py"]
    return sorted(p for p in found if "build" not in p.parts)


@pytest.mark.parametrize("path", code_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_files_stay_small(path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_FILE_LINES, f"{path.relative_to(ROOT)}: {lines} lines"


def python_functions(path: Path) -> list[tuple[str, int, int, int]]:
    """(name, first line, lines, parameters) of every function in a Python file. A
    keyword-only parameter with a default is an option, like a field of an options
    struct with its default, and is not counted; every other one is."""
    tree = ast.parse(path.read_text(), str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = node.args
            required_kw = [k for k, d in zip(a.kwonlyargs, a.kw_defaults, strict=True)
                           if d is None]
            params = [p.arg for p in (*a.posonlyargs, *a.args, *required_kw)
                      if p.arg not in ("self", "cls")]
            first = node.body[0]
            body_start = first.lineno
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                body_start = (first.end_lineno or first.lineno) + 1  # the docstring is not code
            end = node.end_lineno or node.lineno
            out.append((node.name, node.lineno, end - body_start + 1, len(params)))
    return out


CYTHON_DEF = re.compile(r"^(\s*)(?:cdef|cpdef|def)\s+(?:inline\s+)?(?:[\w\[\]*. ]+?\s+)?"
                        r"\**(\w+)\s*\(")


def cython_functions(path: Path) -> list[tuple[str, int, int, int]]:
    """The same for Cython, by indentation: a function ends where a line at its own
    indentation or less begins."""
    lines = path.read_text().splitlines()
    out = []
    for number, line in enumerate(lines):
        match = CYTHON_DEF.match(line)
        if not match:
            continue
        indent = len(match.group(1))
        head = line
        end = number
        while head.count("(") > head.count(")"):        # the parameter list goes on
            end += 1
            head += lines[end]
        if not head.rstrip().endswith(":"):
            continue                                    # a declaration, not a definition
        params_text = head[head.index("(") + 1:head.rindex(")")]
        params = []
        keyword_only = False
        for p in _split_params(params_text):
            p = p.strip()
            if p == "*":
                keyword_only = True
            elif p not in ("self", "") and not (keyword_only and "=" in p):
                params.append(p)        # (an option after "*" is not counted, as above)
        last = end
        for later in range(end + 1, len(lines)):
            text = lines[later]
            if text.strip() and len(text) - len(text.lstrip()) <= indent:
                break
            if text.strip():
                last = later
        out.append((match.group(2), number + 1, last - end, len(params)))
    return out


def _split_params(text: str) -> list[str]:
    depth, current, out = 0, "", []
    for ch in text:
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(current)
            current = ""
        else:
            current += ch
    return [*out, current] if current.strip() else out


def functions(path: Path) -> list[tuple[str, int, int, int]]:
    return python_functions(path) if path.suffix == ".py" else cython_functions(path)


@pytest.mark.parametrize("path", code_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_functions_stay_short_with_few_parameters(path):
    wrong = [f"{path.relative_to(ROOT)}:{line} {name}: {length} lines" for name, line,
             length, _ in functions(path) if length > MAX_FUNCTION_LINES]
    wrong += [f"{path.relative_to(ROOT)}:{line} {name}: {params} parameters" for name, line,
              _, params in functions(path) if params > MAX_PARAMETERS]
    assert not wrong, "\n".join(wrong)


def test_the_cython_reader_finds_the_functions_it_measures():
    """The rule above is only as good as the reader: it must see the packet path's
    functions, with their parameters."""
    found = {name: params for path in PACKAGE.glob("_fastpath/*.p*")
             for name, _, _, params in cython_functions(path)}
    assert "pack_route_table" in found and found["pack_route_table"] == 1
    assert len(found) > 50


# -- the map matches the territory --------------------------------------------------------------

def named_files(text: str) -> set[str]:
    """File names a document gives in backticks (``name.py``, ``dir/name.pxi``)."""
    return {Path(m).name for m in re.findall(r"`([\w./-]+\.(?:py|pxi|pyx|h|c|md))`", text)}


def tree_files() -> set[str]:
    found = [p for p in (*PACKAGE.rglob("*.py"), *PACKAGE.rglob("*.pxi"),
                         *PACKAGE.rglob("*.pyx"), *(ROOT / "benchmarks").glob("*.py"))
             if "build" not in p.parts and p.name not in ("__init__.py", "__main__.py")]
    return {p.name for p in found}


def all_files() -> set[str]:
    return {p.name for p in ROOT.rglob("*") if ".git" not in p.parts and ".venv" not in p.parts
            and "build" not in p.parts}


def test_the_readme_layout_names_every_module_and_only_files_that_exist():
    text = (ROOT / "README.md").read_text()
    layout = text[text.index("\n## Layout\n"):text.index("\n## How to add")]
    named = named_files(layout)
    assert tree_files() - named == set(), "modules the layout table does not name"
    assert named - all_files() == set(), "files the layout table names that do not exist"


def test_design_md_names_only_files_that_exist():
    named = named_files((ROOT / "DESIGN.md").read_text())
    assert named and named - all_files() == set()
