"""Hypothesis settings shared by the ``test_fuzz_*`` modules, fit for CI.

Every property runs a fixed number of cases, the same ones on every run (``derandomize``: a
failure in CI reproduces locally), with no example database and no per-case deadline (a CI
machine's hiccup is not a bug). ``pytest --hypothesis-show-statistics`` prints the counts.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings

CI_FUZZ = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)


def fuzz(cases: int) -> settings:
    """The CI settings with exactly ``cases`` examples."""
    return settings(CI_FUZZ, max_examples=cases)


def escaped(raw: bytes) -> str:
    """Wire bytes as the codec hands them over: UTF-8 with ``surrogateescape``."""
    return raw.decode("utf-8", "surrogateescape")
