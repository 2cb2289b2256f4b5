"""``kafkaupstream-harness demo``: everything ``make demo`` shows, in one process tree."""

from harness.demo.app import DemoOptions, StartupError, run_demo
from harness.demo.ports import PortUnavailable, ensure_port_free
from harness.demo.routes import standalone_yaml

__all__ = [
    "DemoOptions",
    "PortUnavailable",
    "StartupError",
    "ensure_port_free",
    "run_demo",
    "standalone_yaml",
]
