"""docs/plugins.md documents every hook and the Provider API with exact signatures;
every hook has a test_hook_<name> test."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from viber_exporter import hookspecs
from viber_exporter.provider import Provider

ROOT = Path(__file__).resolve().parent.parent
DOCS = (ROOT / "docs" / "plugins.md").read_text()
HEADINGS = {m.group(1) for m in re.finditer(r"^#{2,3} `(.+)`$", DOCS, re.MULTILINE)}
PROVIDER_API = ("parse_settings", "check_id", "check_fields", "start", "verify", "metrics", "close", "fetch",
                "fetch_message", "fetch_many", "check_campaign", "fetch_campaign", "tracks_campaigns", "capabilities",
                "drain", "authenticate_callback", "parse_callback")


def signature(function: Callable[..., Any], prefix: str = "") -> str:
    sig = inspect.signature(function)
    params = ", ".join(
        name if p.annotation is inspect.Parameter.empty else f"{name}: {p.annotation}"
        for name, p in sig.parameters.items()
    )
    return f"{prefix}{function.__name__}({params}) -> {sig.return_annotation}"


def hooks() -> list[Callable[..., Any]]:
    return [f for name, f in vars(hookspecs).items()
            if callable(f) and hasattr(f, f"{hookspecs.PROJECT_NAME}_spec")]


def test_every_hook_is_documented_with_its_exact_signature():
    assert {f.__name__ for f in hooks()} == {"register_providers", "status_changed", "message_status_changed"}
    for hook in hooks():
        assert signature(hook) in HEADINGS, f"docs/plugins.md needs a heading `{signature(hook)}`"


def test_every_documented_hook_exists():
    names = {f.__name__ for f in hooks()}
    documented = {h.split("(")[0] for h in HEADINGS if not h.startswith("Provider.")}
    assert documented <= names, documented - names


def test_every_public_provider_method_is_listed():
    public = {name for name, value in vars(Provider).items() if callable(value) or isinstance(value, classmethod)}
    public = {name for name in public if not name.startswith("_") and name != "signs_callbacks"}
    assert public == set(PROVIDER_API)


def test_every_provider_method_is_documented_with_its_exact_signature():
    for name in PROVIDER_API:
        heading = signature(getattr(Provider, name), "Provider.")
        assert heading in HEADINGS, f"docs/plugins.md needs a heading `{heading}`"


def test_every_hook_has_a_test():
    tests = "\n".join(p.read_text() for p in (ROOT / "tests").glob("test_*.py"))
    for hook in hooks():
        assert re.search(rf"^def test_hook_{hook.__name__}\(", tests, re.MULTILINE), f"write test_hook_{hook.__name__}"
