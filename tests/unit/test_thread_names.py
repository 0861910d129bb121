"""agents.thread_names: the kernel sees the name a thread gives itself."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

from agents.thread_names import name_this_thread


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="names through prctl, read from /proc")
def test_a_thread_names_itself_for_the_kernel_cut_to_15_bytes() -> None:
    seen: list[str] = []

    def body() -> None:
        name_this_thread("a-name-longer-than-fifteen")
        seen.append(Path(f"/proc/self/task/{threading.get_native_id()}/comm").read_text().strip())

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    assert seen == ["a-name-longer-t"]
