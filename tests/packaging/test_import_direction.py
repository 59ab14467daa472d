"""Dependencies point one way: the exceptions a user catches sit at the bottom (they import nothing
of kldrift); schemas and divergence know nothing of Beam; the library (pipeline, transforms, io
and the other modules) never imports the CLI, the demo or the dev-only local services. Read from the source with ast, so a lazy import inside a function counts too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "kldrift"
ON_TOP = ("kldrift.cli", "kldrift.commands", "kldrift.demo", "kldrift.local")
"""What only the CLI side may import."""
CLI_SIDE = ("cli.py", "commands.py", "demo.py", "local")


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)


def _imports(source: str, module: str) -> set[str]:
    """Every module `source` (the text of `module`) imports, as absolute names; `from kldrift
    import x` gives kldrift and kldrift.x."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolved against the module's package
                package = tuple(module.split("."))[: -node.level]
                base = ".".join(package + ((node.module,) if node.module else ()))
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def _library_files() -> list[Path]:
    return [
        path
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.relative_to(PACKAGE).parts[0] not in CLI_SIDE
    ]


def _offending(path: Path, prefixes: tuple[str, ...]) -> list[str]:
    return sorted(
        name
        for name in _imports(path.read_text(), _module_name(path))
        if any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)
    )


@pytest.mark.parametrize("path", _library_files(), ids=lambda p: str(p.relative_to(PACKAGE.parent)))
def test_the_library_never_imports_the_cli_or_local_services(path: Path) -> None:
    assert _offending(path, ON_TOP) == []


@pytest.mark.parametrize(
    "path",
    [*sorted((PACKAGE / "schemas").glob("*.py")), PACKAGE / "divergence.py"],
    ids=lambda p: str(p.relative_to(PACKAGE.parent)),
)
def test_schemas_and_divergence_know_nothing_of_beam(path: Path) -> None:
    assert _offending(path, ("apache_beam",)) == []


def test_the_exceptions_import_nothing_of_kldrift() -> None:
    assert _offending(PACKAGE / "exceptions.py", ("kldrift", "apache_beam")) == []


def test_the_check_sees_a_forbidden_import() -> None:
    """The checks above would fail on the imports they forbid, lazy or relative ones included."""
    source = (
        "def f():\n"
        "    from kldrift.local.flink import ensure_installed\n"
        "    from ..commands import UserError\n"
        "    from kldrift import demo\n"
        "    import apache_beam as beam\n"
    )
    names = _imports(source, "kldrift.pipeline.example")
    assert {"kldrift.local.flink", "kldrift.commands", "kldrift.demo", "apache_beam"} <= names
    assert "kldrift.pipeline" not in names
