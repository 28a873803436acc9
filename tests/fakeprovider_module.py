"""A plugin as a module, like the built-in ones (used to test DEFAULT_PLUGINS handling)."""

from viber_exporter import hookimpl

from .fakeprovider import FakeProvider


@hookimpl
def register_providers(register):  # type: ignore[no-untyped-def]
    register(FakeProvider)
