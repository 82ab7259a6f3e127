"""The house rule on length: no function under src/ longer than 60 lines, its docstring included."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 60


def long_functions(root: Path = ROOT / "src", limit: int = MAX_LINES) -> list[str]:
    """``path:line name (N lines)`` for every function or method longer than ``limit`` lines, from
    its first decorator to its last line."""
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                n = node.end_lineno - start + 1
                if n > limit:
                    found.append(f"{path.relative_to(root.parent).as_posix()}:{node.lineno} {node.name} ({n} lines)")
    return found


def test_the_counter_sees_a_long_function(tmp_path):
    """Negative control: a 61-line function (decorator to end) is reported, a 60-line one is not."""
    body = "\n".join(f"    x{i} = {i}" for i in range(58))
    (tmp_path / "a.py").write_text(f"@staticmethod\ndef long():\n{body}\n    return 0\n\ndef short():\n{body}\n")
    assert [f.split(" ", 1)[1] for f in long_functions(tmp_path)] == ["long (61 lines)"]


def test_no_function_under_src_is_longer_than_60_lines():
    found = long_functions()
    assert not found, f"functions longer than {MAX_LINES} lines:\n" + "\n".join(found)
