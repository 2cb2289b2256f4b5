"""Load generator: drives the runner over the ext-plugin RPC, or the gateway over HTTP.

``python -m harness.load --help`` for the command line; :func:`run_load` for scripts.
"""

from harness.load.bodies import BodyTemplate, make_template
from harness.load.driver import LoadOptions, RunResult, SetupError, run_load
from harness.load.report import Summary, format_text, summarize
from harness.load.rpc import RouteConf

__all__ = [
    "BodyTemplate",
    "LoadOptions",
    "RouteConf",
    "RunResult",
    "SetupError",
    "Summary",
    "format_text",
    "make_template",
    "run_load",
    "summarize",
]
