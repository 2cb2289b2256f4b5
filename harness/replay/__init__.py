"""Record real traffic once, replay it against any runner build, and see what changed.

- :mod:`~harness.replay.format`: the recording file (JSON Lines, versioned; its docstring is the
  specification); :mod:`~harness.replay.har`: HAR 1.2 read into the same exchanges;
  :mod:`~harness.replay.loader` tells them apart; :mod:`~harness.replay.redact`: secrets.
- :mod:`~harness.replay.recorder`: the gateway's ``on_exchange`` hook writing a recording
  (``gateway --record``, ``demo --record``); :mod:`~harness.replay.proxy`: ``record``, a
  recording HTTP proxy in front of APISIX or anything HTTP.
- ``replay``: :mod:`~harness.replay.cli`, :mod:`~harness.replay.replayer` (pacing, workers),
  :mod:`~harness.replay.senders` (HTTP or the RPC), :mod:`~harness.replay.compare`,
  :mod:`~harness.replay.broker_check`, :mod:`~harness.replay.report`;
  :mod:`~harness.replay.template` fills ``${NAME}`` placeholders in routes files.
- :mod:`harness.replay.sample`: regenerates ``tests/data/replay/``.
"""
