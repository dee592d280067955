"""vitjax's import graph, built from the source: one-way data flow means no cycles, and no imports
hidden inside functions (which is how cycles used to be hidden) except optional heavy dependencies."""
import ast
import pathlib

from conftest import REPO

PACKAGE = REPO / "vitjax"
# Third-party modules that may be imported inside a function: optional extras (the ``torch`` extra,
# matplotlib for plots, the CLIP/HF tokenizers' regex/ftfy/tokenizers, the onnx extra's onnxruntime,
# huggingface_hub for pretrained= hub ids) so that importing vitjax never
# requires them, and heavy imports only some data sources need (TFDS ~0.5 s, scikit-learn ~1.5 s for
# the digits), so that converter worker processes and ``python -m vitjax.data`` start fast. Each such
# import carries a comment (on its line or the three above) saying why it is lazy.
LAZY_ALLOWED = ("torch", "transformers", "timm", "open_clip", "matplotlib", "safetensors.torch", "tokenizers",
                "regex", "ftfy", "tensorflow_datasets", "sklearn", "onnxruntime", "huggingface_hub",
                "pycocotools", "wandb")


def _modules() -> dict[str, pathlib.Path]:
    mods = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


def _imported(node: ast.AST, module: str, is_package: bool) -> list[str]:
    """Absolute names an import statement imports (a ``from x import y`` gives x and x.y)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = node.module or ""
    if node.level:
        pkg = module.split(".") if is_package else module.split(".")[:-1]
        pkg = pkg[: len(pkg) - node.level + 1]
        base = ".".join(pkg + ([base] if base else []))
    return [base] + [f"{base}.{a.name}" for a in node.names]


def _graph():
    mods = _modules()
    edges: dict[str, set[str]] = {m: set() for m in mods}
    lazy = []
    for mod, path in mods.items():
        source = path.read_text()
        tree = ast.parse(source)
        lines = source.splitlines()
        inside = set()
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                inside.update(id(n) for n in ast.walk(fn) if isinstance(n, (ast.Import, ast.ImportFrom)))
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            names = _imported(node, mod, path.name == "__init__.py")
            if id(node) in inside:
                lazy.append((mod, node.lineno, names[0], lines[max(0, node.lineno - 4):node.lineno]))
            for name in names:
                # A package's own ancestors are already being imported when it runs: not an edge.
                if name not in mods or name == mod or mod.startswith(name + "."):
                    continue
                edges[mod].add(name)
                # Importing a.b.c runs the __init__ of a and a.b first, unless the importer is inside them
                # (then they are already being imported).
                parts = name.split(".")
                for i in range(1, len(parts)):
                    parent = ".".join(parts[:i])
                    if parent in mods and not mod.startswith(parent + ".") and parent != mod:
                        edges[mod].add(parent)
    return edges, lazy


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_the_import_graph_has_no_cycle():
    edges, _ = _graph()
    assert sum(len(e) for e in edges.values()) > 100        # the graph was really built
    assert _cycles(edges) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_function_level_imports_but_optional_heavy_dependencies():
    _, lazy = _graph()
    bad = [f"{m}:{line} imports {name}" for m, line, name, *_ in lazy
           if not any(name == p or name.startswith(p + ".") for p in LAZY_ALLOWED)]
    assert bad == []
    undocumented = [f"{m}:{line}" for m, line, _, context in lazy if not any("#" in text for text in context)]
    assert undocumented == []
