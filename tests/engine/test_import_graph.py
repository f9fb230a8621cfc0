"""No import cycle among the package's modules, counting imports made for type checking too
(a cycle there still ties two modules together); imports inside functions are deferred on
purpose (the CLI's heavy libraries) and do not count."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "kd_search"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def top_level_imports(tree: ast.Module, modules: set[str]) -> set[str]:
    found: set[str] = set()
    body = list(tree.body)
    while body:
        node = body.pop()
        if isinstance(node, ast.If):  # `if TYPE_CHECKING:` blocks
            body.extend(node.body + node.orelse)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
            found |= {name for name in names if name in modules} or ({node.module} & modules)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names} & modules
    return found


def import_graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(path) for path in paths}
    return {module_name(path): top_level_imports(ast.parse(path.read_text()), modules) for path in paths}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return path[path.index(target):] + [target] if target in path else [node, target]
            if target not in state and (cycle := visit(target, path + [target])):
                return cycle
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start, [start])):
            return cycle
    return None


def test_the_graph_sees_the_evaluation_setup_edge():
    graph = import_graph()
    assert "kd_search.engine.setup" in graph["kd_search.engine.evaluation"]  # a type-checking import counts
    assert "kd_search.engine.setup" in graph["kd_search.engine.model_audit"]
    assert "kd_search.engine.trial" not in graph["kd_search.engine.model_audit"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_module_of_the_package_imports_itself_back():
    assert find_cycle(import_graph()) is None
