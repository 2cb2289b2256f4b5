"""The runner's lifetime options: flag or environment variable, defaults, refusals naming which."""

from __future__ import annotations

from typing import Any

import pytest

from kafkaupstream.runner import RunnerOptions


def options(**given: Any) -> RunnerOptions:
    return RunnerOptions.from_environment(
        listen="unix:/tmp/x.sock", conf_expire="100", shutdown_timeout_s=0.8, **given
    )


def test_defaults() -> None:
    found = options()
    assert (found.max_producers, found.producer_grace_s) == (100, 60.0)
    assert (found.stall_after_s, found.worker_timeout_s) == (10.0, 10.0)
    # Unused for the token lifetime (1.2 x APISIX_CONF_EXPIRE_TIME), then the grace period.
    assert found.producer_idle_s == pytest.approx(120.0 + 60.0)


def test_flags_are_numbers_and_variables_are_text() -> None:
    found = options(max_producers=7, producer_grace="2.5", stall_after="3", worker_timeout=4.0)
    assert (found.max_producers, found.producer_grace_s) == (7, 2.5)
    assert (found.stall_after_s, found.worker_timeout_s) == (3.0, 4.0)


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"max_producers": "many"}, "KAFKAUPSTREAM_MAX_PRODUCERS must be a whole number"),
        ({"max_producers": "0"}, "KAFKAUPSTREAM_MAX_PRODUCERS must be at least 1"),
        ({"max_producers": 0}, "--max-producers must be at least 1"),
        ({"producer_grace": "-1"}, "KAFKAUPSTREAM_PRODUCER_GRACE must be at least 0"),
        ({"producer_grace": "nan"}, "KAFKAUPSTREAM_PRODUCER_GRACE must be at least 0"),
        ({"stall_after": 0.5}, "--stall-after must be at least 1"),
        ({"worker_timeout": "2"}, "KAFKAUPSTREAM_WORKER_TIMEOUT must be at least 3"),
    ],
)
def test_bad_values_are_refused_naming_the_flag_or_variable(
    given: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        options(**given)
