"""The exporter's version, and its plugin API's, kept apart so packaging can read them
without importing dependencies."""

__version__ = "0.1.0"

#: The plugin API's version. Minor versions only add; a major version may remove
#: what the previous one deprecated (docs/plugins.md, "Compatibility").
PLUGIN_API_VERSION = "1.3"
