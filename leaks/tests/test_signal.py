"""The SIGUSR1 dump: the whole process, written out, and the process keeps running."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from pathlib import Path

from tidegate import leaks


async def parked_forever(event: asyncio.Event) -> None:
    await event.wait()


async def test_signal_dump_writes_every_task_and_thread(tmp_path: Path) -> None:
    out = tmp_path / "dump.txt"
    release = asyncio.Event()
    task = asyncio.create_task(parked_forever(release), name="parked-for-dump")
    await asyncio.sleep(0)
    uninstall = leaks.install_signal_dump(signal.SIGUSR1, path=out)
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
        # Python runs the handler in the main thread at the next bytecode; give
        # the loop one turn so it surely has.
        await asyncio.sleep(0)
    finally:
        uninstall()
    text = out.read_text()
    assert text.startswith(f"=== tidegate dump pid={os.getpid()} ")
    assert "task parked-for-dump [asyncio.Event.wait" in text
    assert "in parked_forever" in text
    assert f"thread {threading.main_thread().name} [" in text
    main = text[text.index(f"thread {threading.main_thread().name} [") :]
    # The main thread shows where the signal found it, not the dump's own frames.
    assert "in test_signal_dump_writes_every_task_and_thread" in main
    assert "in on_signal" not in main and "in snapshot" not in main
    release.set()
    await task
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL
