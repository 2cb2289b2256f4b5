"""What producer configs look like in logs: secrets and broker user info blanked everywhere."""

from __future__ import annotations

import logging

import pytest

from kafkaupstream.producers import canonical_config, redact
from kafkaupstream.producers.config import scrub
from kafkaupstream.producers.librdkafka_log import RateLimitedLog

SERVERS = "alice:pa55word@k1:9092,SASL_SSL://bob:hunter2@k2:9093"
CONFIG = canonical_config({"bootstrap.servers": SERVERS, "sasl.password": "s3cr3t", "acks": "all"})


def test_redact_shows_the_broker_list_as_hosts_and_ports_and_blanks_secrets() -> None:
    assert redact(CONFIG) == {
        "acks": "all",
        "bootstrap.servers": "k1:9092,SASL_SSL://k2:9093",
        "sasl.password": "***",
    }
    assert redact({"metadata.broker.list": "u:pw@h:1"}) == {"metadata.broker.list": "h:1"}


def test_scrub_blanks_broker_user_info_and_its_password_alone() -> None:
    text = (
        "Failed to resolve 'alice:pa55word@k1:9092': Name or service not known; "
        "bob:hunter2@k2; password hunter2; sasl s3cr3t"
    )
    scrubbed = scrub(text, CONFIG)
    for secret in ("pa55word", "hunter2", "s3cr3t", "alice:", "bob:"):
        assert secret not in scrubbed
    assert "Failed to resolve '***@k1:9092'" in scrubbed


def test_librdkafka_lines_are_scrubbed_before_they_are_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="kafkaupstream.producers.librdkafka_log")
    log = RateLimitedLog("producer-1", scrub=lambda text: scrub(text, CONFIG))
    log.log(logging.WARNING, "%s: Failed to resolve '%s'", "FAIL", "alice:pa55word@k1:9092")
    assert "event=librdkafka producer=producer-1" in caplog.text
    assert "FAIL: Failed to resolve '***@k1:9092'" in caplog.text
    assert "pa55word" not in caplog.text
