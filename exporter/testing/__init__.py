"""What plugin authors test with: a real exporter running a plugin (:mod:`.harness`:
``run_exporter``, ``serve``), and the contract kit (:mod:`.contract`, needs the
``testing`` extra). The mock providers and the virtual-time runner serve the
exporter's own tests and the demo."""

from .harness import RunningExporter, run_exporter, serve

__all__ = ["RunningExporter", "run_exporter", "serve"]
