"""The package layout carries the architecture: imports flow one way, with no circle.

    cli -> app -> engine -> faces -> models, losses -> data

Every `import` and `from ... import` in ferlab (module level or inside a function) is read with
`ast`; each module belongs to the layer of its top folder, and may import its own layer's modules
or lower layers only. Modules of one layer form no import circle either.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "src" / "ferlab"

# layer rank: a module may import modules of a lower rank, or of its own folder
LAYERS = {"_tv_compat": 0, "data": 0, "models": 1, "losses": 1, "faces": 2, "engine": 3, "app": 4, "cli": 5,
          "__init__": 6}
FOLDERS = {"data", "faces", "models", "losses", "engine", "app"}


def module_name(path: Path, pkg: Path = PKG) -> str:
    parts = list(path.relative_to(pkg.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def imported_modules(path: Path, known: set[str], pkg: Path = PKG) -> set[str]:
    """ferlab modules that PATH imports (a `from X import name` names X.name where that is a module)."""
    tree = ast.parse(path.read_text(), str(path))
    me = module_name(path, pkg)
    package = me if is_package(path) else me.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "ferlab")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "ferlab":
                continue
            subs = {f"{target}.{a.name}" for a in node.names} & known
            out.update(subs)
            if len(subs) < len(node.names):  # some names come from the module itself
                out.add(target)
    return {m for m in out if m in known and m != me}


def layer_of(module: str) -> str:
    parts = module.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


def import_graph(pkg: Path = PKG) -> dict[str, set[str]]:
    files = sorted(pkg.rglob("*.py"))
    known = {module_name(p, pkg) for p in files}
    return {module_name(p, pkg): imported_modules(p, known, pkg) for p in files}


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for mod, deps in graph.items():
        for dep in deps:
            a, b = layer_of(mod), layer_of(dep)
            if dep == "ferlab" or (a != b and LAYERS[b] >= LAYERS[a]):
                bad.append(f"{mod} ({a}) imports {dep} ({b})")
    return sorted(bad)


def without_reexports(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """A package's __init__ importing its own submodules is not a circle of meaning."""
    return {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in graph.items()}


def test_every_module_lives_in_a_layer():
    """Nothing but the CLI, the torchvision shim and the package root sits beside the folders."""
    loose = {p.stem for p in PKG.glob("*.py")} - {"__init__", "cli", "_tv_compat"}
    assert not loose, f"modules outside the layer folders: {sorted(loose)}"
    folders = {p.name for p in PKG.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders == FOLDERS, folders ^ FOLDERS


def test_imports_flow_downward():
    bad = upward_imports(import_graph())
    assert not bad, "imports against the layer order:\n" + "\n".join(sorted(bad))


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state:
                c = visit(m)
                if c:
                    return c
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state:
            c = visit(n)
            if c:
                return c
    return None


def test_no_import_circle():
    cycle = find_cycle(without_reexports(import_graph()))
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_the_checker_catches_an_upward_import_and_a_circle(tmp_path):
    """The checks above fail on a made-up package that breaks each rule (the circle of issue 19:
    faces.landmarks -> engine.landmark_training -> engine.train -> faces)."""
    pkg = tmp_path / "ferlab"
    files = {"__init__.py": "", "faces/__init__.py": "from .landmarks import x\n",
             "faces/landmarks.py": "def f():\n    from ..engine.landmark_training import y\n",
             "engine/__init__.py": "", "engine/landmark_training.py": "from . import train\n",
             "engine/train.py": "from ferlab.faces import landmarks\n", "data/__init__.py": "",
             "data/cache.py": "import ferlab.models.weights\n", "models/__init__.py": "",
             "models/weights.py": "from ..data.cache import z\n"}
    for name, text in files.items():
        (pkg / name).parent.mkdir(parents=True, exist_ok=True)
        (pkg / name).write_text(text)
    graph = import_graph(pkg)
    assert graph["ferlab.engine.train"] == {"ferlab.faces.landmarks"}
    assert upward_imports(graph) == ["ferlab.data.cache (data) imports ferlab.models.weights (models)",
                                     "ferlab.faces.landmarks (faces) imports ferlab.engine.landmark_training (engine)"]
    graph = without_reexports(graph)
    assert find_cycle(graph) == ["ferlab.data.cache", "ferlab.models.weights", "ferlab.data.cache"]
    graph["ferlab.data.cache"] = set()
    assert find_cycle(graph) == ["ferlab.engine.landmark_training", "ferlab.engine.train", "ferlab.faces.landmarks",
                                 "ferlab.engine.landmark_training"]


def test_public_api_is_importable():
    import ferlab
    from ferlab import FaceAnalyzer, create_model, list_models  # noqa: F401
    assert "resnet18" in list_models()
    assert ferlab.FaceAnalyzer is FaceAnalyzer


@pytest.mark.parametrize("mod", sorted(import_graph()))
def test_every_module_imports(mod):
    import importlib
    importlib.import_module(mod)


def test_model_catalog_matches_the_registry():
    from ferlab import list_models
    from ferlab.cli import MODELS
    assert sorted(MODELS) == sorted(list_models())
