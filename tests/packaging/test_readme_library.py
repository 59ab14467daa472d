"""README's library section names what the library gives a user: every counter of the `kldrift`
namespace, every error of the hierarchy, and where `kldrift.prism_location()` finds Prism."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import pytest

from kldrift import exceptions, metrics
from kldrift.pipeline import prism

ROOT = Path(__file__).resolve().parents[2]
SECTION = (
    (ROOT / "README.md")
    .read_text()
    .split("## Use it in your own Beam pipeline", 1)[1]
    .split("\n## ", 1)[0]
)


def test_every_counter_is_named_with_its_namespace() -> None:
    names = [value for name, value in vars(metrics).items() if name.isupper() and name != "TOTALS"]
    assert f"namespace `{metrics.NAMESPACE}`" in SECTION
    assert [name for name in names if f"`{name}`" not in SECTION] == []


def test_every_error_of_the_hierarchy_is_named() -> None:
    missing = [cls.__name__ for cls in exceptions.user_error_types() if cls.__name__ not in SECTION]
    assert missing == []


def test_the_prism_path_is_where_prism_location_looks(monkeypatch: pytest.MonkeyPatch) -> None:
    home = Path("/home/someone")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("KLDRIFT_HOME", raising=False)
    documented = "`~/.cache/kldrift/bin/prism-<apache-beam version>/prism`"
    assert documented in SECTION
    path = documented.strip("`").replace("~", str(home))
    assert prism.prism_binary() == Path(
        path.replace("<apache-beam version>", version("apache-beam"))
    )
    monkeypatch.delenv("KLDRIFT_PRISM", raising=False)
    with pytest.raises(exceptions.PrismNotInstalled, match=r"make setup"):
        prism.prism_location()
