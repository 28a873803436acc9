"""The exporter's version, kept apart so packaging can read it without importing dependencies."""

__version__ = "0.1.0"
