"""Union discriminators of ``ext-plugin.fbs`` (A6.HTTPReqCall.Action, A6.ExtraInfo.Info).

Shared by the reader and the writer, so the two cannot disagree on them.
"""

from __future__ import annotations

from typing import Final

ACTION_STOP: Final = 1
ACTION_REWRITE: Final = 2
INFO_VAR: Final = 1
INFO_REQ_BODY: Final = 2
INFO_RESP_BODY: Final = 3
