"""The layer guard (`tools/check_layers.py`, run by `make lint`) passes on the tree and
catches each kind of import against the layers."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).parents[1]


def load_checker() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_layers", ROOT / "tools/check_layers.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


checker = load_checker()


def test_the_tree_keeps_its_layers() -> None:
    assert checker.check([ROOT / "src", ROOT / "leaks/src"]) == []


@pytest.mark.parametrize(
    ("module", "source", "rule"),
    [
        ("protocol/frames.py", "from tidegate.ops import Watchdog\n", "protocol core"),
        ("protocol/lines.py", "import tidegate.ops.metrics\n", "protocol core"),
        ("leaks/_records.py", "from tidegate.protocol import Push\n", "tidegate.leaks"),
        ("ops/metrics.py", "from tidegate.gateway.stats import Counters\n", "tidegate.cli"),
        ("load/demo.py", "from tidegate.gateway import open_gateway\n", "tidegate.cli"),
        ("gateway/http.py", "from .server import Gateway\n", "composition root"),
        (
            "gateway/admin.py",
            "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    from tidegate.gateway.server import Gateway\n",
            "composition root",
        ),
        ("ops/admin.py", "def f():\n    from tidegate import gateway\n", "tidegate.cli"),
    ],
)
def test_imports_against_the_layers_are_caught(
    tmp_path: Path, module: str, source: str, rule: str
) -> None:
    path = tmp_path / "tidegate" / module
    path.parent.mkdir(parents=True)
    path.write_text(source)
    (violation,) = checker.check([tmp_path])
    assert rule in violation.rule and violation.path == path


def test_allowed_imports_pass(tmp_path: Path) -> None:
    for module, source in {
        "cli.py": "from tidegate.gateway import open_gateway\n",
        "gateway/__init__.py": "from tidegate.gateway.server import Gateway\n",
        "gateway/tcp.py": "from .client import ClientHost\nfrom tidegate.protocol import State\n",
        "protocol/connection.py": "from .frames import ErrorCode\n",
        "ops/admin_routes.py": "from tidegate import leaks\nfrom tidegate.bearer import x\n",
    }.items():
        path = tmp_path / "tidegate" / module
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    assert checker.check([tmp_path]) == []


def test_the_architecture_page_names_modules_and_members_that_exist() -> None:
    text = (ROOT / "docs/architecture.md").read_text()
    sources = {path.name: path for path in (ROOT / "src/tidegate").rglob("*.py")}
    sources.update({path.name: path for path in (ROOT / "tools").glob("*.py")})
    named = set(re.findall(r"\b(\w+\.py)\b", text))
    assert named and named <= set(sources) | {"test_client_protocol.py"}, named - set(sources)
    for module in set(re.findall(r"\b(tidegate\.\w+)\b", text)):
        assert importlib.util.find_spec(module) is not None, module
    code = "".join(path.read_text() for path in sources.values())
    # `Class.member` mentions: the class and its member are defined somewhere in src/.
    for owner, member in set(re.findall(r"`(?:\w+\.)?([A-Z]\w+)\.(\w+)`", text)):
        assert f"class {owner}" in code, owner
        assert re.search(rf"def {member}\b|\b{member} =|\b{member}:", code), f"{owner}.{member}"
