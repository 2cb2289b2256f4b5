"""The runner's event loop: uvloop when installed unless told otherwise, asyncio's without it."""

from __future__ import annotations

import asyncio
import builtins
import logging

import pytest

from kafkaupstream.server import eventloop


def test_asyncio_is_chosen_when_asked_for():
    assert eventloop.loop_factory("asyncio") == ("asyncio", None)


def test_uvloop_is_the_default_when_installed():
    uvloop = pytest.importorskip("uvloop")
    assert eventloop.loop_factory("") == ("uvloop", uvloop.new_event_loop)


def test_without_uvloop_the_runner_falls_back_to_asyncio(monkeypatch, caplog):
    real_import = builtins.__import__

    def no_uvloop(name, *args, **kwargs):  # type: ignore[no-untyped-def]
        if name == "uvloop":
            raise ImportError("No module named 'uvloop'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_uvloop)
    assert eventloop.loop_factory("") == ("asyncio", None)
    with caplog.at_level(logging.WARNING):
        assert eventloop.loop_factory("uvloop") == ("asyncio", None)
    assert "uvloop_missing" in caplog.text


def test_an_unknown_choice_is_ignored_with_a_warning(monkeypatch, caplog):
    monkeypatch.setenv(eventloop.LOOP_ENV, "trio")
    with caplog.at_level(logging.WARNING):
        name, _factory = eventloop.loop_factory()
    assert name in ("uvloop", "asyncio")
    assert "unknown_loop" in caplog.text


@pytest.mark.parametrize("choice", ["asyncio", "uvloop"])
def test_run_serves_a_coroutine_on_the_chosen_loop(monkeypatch, choice: str):
    if choice == "uvloop":
        pytest.importorskip("uvloop")
    monkeypatch.setenv(eventloop.LOOP_ENV, choice)

    async def loop_module() -> str:
        return type(asyncio.get_running_loop()).__module__

    assert eventloop.run(loop_module()).startswith(choice)
