"""The layer guard of `make lint`: which tidegate package may import which.

    python tools/check_layers.py [ROOT ...]     (default: src leaks/src)

The rules, one line each (an import anywhere counts, inside a function or under
TYPE_CHECKING too, since a hidden import is still a dependency):

- `tidegate.protocol`, the sans-I/O core, imports no other tidegate package;
- `tidegate.leaks`, its own distribution, imports no other tidegate package;
- nothing but `tidegate.cli` (and the gateway itself) imports `tidegate.gateway`;
- inside the gateway, nothing but its package face (`__init__`) imports `server.py`, the
  composition root: adapters are handed callables and narrow objects instead.

Prints each violation as `file:line: importer imports target (rule)` and exits 1 if any.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _only_itself(package: str) -> Callable[[str, str], bool]:
    def allowed(importer: str, target: str) -> bool:
        return not _within(importer, package) or _within(target, package)

    return allowed


def _only_from(package: str, *importers: str) -> Callable[[str, str], bool]:
    def allowed(importer: str, target: str) -> bool:
        return not _within(target, package) or any(_within(importer, i) for i in importers)

    return allowed


# (rule, allowed(importer, target)); only imports of `tidegate.*` modules are checked.
RULES: Final[tuple[tuple[str, Callable[[str, str], bool]], ...]] = (
    ("the protocol core imports no other tidegate package", _only_itself("tidegate.protocol")),
    ("tidegate.leaks imports no other tidegate package", _only_itself("tidegate.leaks")),
    (
        "only tidegate.cli imports tidegate.gateway",
        _only_from("tidegate.gateway", "tidegate.cli", "tidegate.gateway"),
    ),
    (
        "only the gateway's __init__ imports its composition root, server.py",
        lambda importer, target: (
            not _within(target, "tidegate.gateway.server")
            or importer in ("tidegate.gateway", "tidegate.gateway.server")
        ),
    ),
)


@dataclass(frozen=True, slots=True)
class Violation:
    path: Path
    line: int
    importer: str
    target: str
    rule: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.importer} imports {self.target} ({self.rule})"


def _module_name(path: Path, root: Path) -> tuple[str, bool]:
    """The dotted name of the module at `path` under `root`, and whether it is a package."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts.pop()
    return ".".join(parts), is_package


def _imports(tree: ast.AST, module: str, is_package: bool) -> Iterator[tuple[int, str]]:
    """(line, imported module) for every import, relative ones resolved; `from a import b`
    yields `a.b` (b may be a module) as well as `a`."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                source = ".".join([*base, node.module] if node.module else base)
            else:
                source = node.module or ""
            yield node.lineno, source
            for alias in node.names:
                yield node.lineno, f"{source}.{alias.name}"


def check(roots: Iterable[Path]) -> list[Violation]:
    """Every import under `roots` (folders holding the `tidegate` namespace) against the
    rules; one violation per line and rule."""
    violations = []
    seen: set[tuple[Path, int, str]] = set()
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            importer, is_package = _module_name(path, root)
            if not _within(importer, "tidegate"):
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
            for line, target in _imports(tree, importer, is_package):
                if not _within(target, "tidegate"):
                    continue
                for rule, allowed in RULES:
                    if not allowed(importer, target) and (path, line, rule) not in seen:
                        seen.add((path, line, rule))
                        violations.append(Violation(path, line, importer, target, rule))
    return violations


def main(argv: list[str]) -> int:
    roots = [Path(arg) for arg in argv] or [Path("src"), Path("leaks/src")]
    violations = check(roots)
    for violation in violations:
        print(violation)
    if violations:
        print(f"check_layers: {len(violations)} import(s) against the layers", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
