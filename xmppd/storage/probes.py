"""What the storage layer reports to the metrics: `xmppd/metrics.py` installs its probes here,
so the layer itself imports nothing of the server (tests/xmppd/storage/test_imports.py)."""

from __future__ import annotations

import time
from collections.abc import Callable


def _noop(*_args: object) -> None:
    return None


clock: Callable[[], float] = time.perf_counter
call: Callable[[float, BaseException | None], None] = _noop  # one call: seconds, its error
refused: Callable[[], None] = _noop  # a call refused at once while the breaker is open
