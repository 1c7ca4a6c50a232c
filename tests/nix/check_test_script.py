"""Checks a NixOS VM test's testScript without a VM: it parses as Python, and it uses only the
names the NixOS test driver provides (../shared/nix/nixos_test_driver_api.py), Python's builtins
and what the script defines itself. `machine.<name>` (and `<node>.<name>`) must be a method or
attribute of the driver's Machine.

    python3 check_test_script.py API_FILE SCRIPT_FILE NODE...

Prints one line per problem and exits 1 when there is any; run by tests/nix_eval.rs.
"""

import ast
import builtins
import runpy
import sys


def bound_names(tree: ast.AST) -> set[str]:
    """Every name the script binds anywhere: assignments, defs, imports, loop and with targets,
    parameters, comprehension variables, except handlers."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            names.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                names.add((alias.asname or alias.name).split(".")[0])
        elif isinstance(node, ast.ExceptHandler) and node.name:
            names.add(node.name)
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            names.update(node.names)
    return names


def problems(script: str, api: dict, nodes: list[str]) -> list[str]:
    try:
        tree = ast.parse(script, filename="testScript")
    except SyntaxError as e:
        return [f"line {e.lineno}: not Python: {e.msg}"]
    machine_names = api["MACHINE"]
    node_names = set(nodes) | ({"machine"} if len(nodes) == 1 else set())
    known = bound_names(tree) | set(dir(builtins)) | api["DRIVER_SYMBOLS"] | node_names
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id not in known:
            found.append(f"line {node.lineno}: `{node.id}` is not defined by the test driver or the script")
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in node_names
            and node.attr not in machine_names
        ):
            found.append(f"line {node.lineno}: `{node.value.id}.{node.attr}` is not a Machine method or attribute")
    return found


def main() -> int:
    api_file, script_file, *nodes = sys.argv[1:]
    api = runpy.run_path(api_file)
    with open(script_file, encoding="utf-8") as f:
        script = f.read()
    found = problems(script, api, nodes)
    for p in found:
        print(p)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
