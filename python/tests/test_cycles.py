"""200 join/leave cycles in one process leak no threads, file descriptors or memory."""

from __future__ import annotations

import asyncio
import gc
import os

import groupcall
from conftest import write_tone

CYCLES = 200
WARM_UP = 10


def threads() -> int:
    return len(os.listdir("/proc/self/task"))


def fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def test_200_join_leave_cycles_leak_no_threads_fds_or_memory(server, tmp_path):
    tone = write_tone(tmp_path / "tone.wav", 440.0, 1.0)

    async def main():
        engine = groupcall.Engine.local(server, 1001)
        call_id = await engine.create_call()
        listener = await groupcall.Engine.local(server, 2002).join(call_id)

        async def cycle(i: int) -> None:
            call = await engine.join(call_id, play=str(tone), frames=(i % 2 == 0))

            async def connected():
                async for e in call.events():
                    if e.kind == "connected":
                        return

            await asyncio.wait_for(connected(), 10)
            await call.leave()

        for i in range(WARM_UP):
            await cycle(i)
        gc.collect()
        await asyncio.sleep(0.5)
        before = (threads(), fds(), rss_mib())
        for i in range(CYCLES):
            await cycle(i)
        # Settled: an HTTP connection closing, or the blocking pool's idle threads (they stop
        # after 10 s), may take a moment; a leak never settles.
        for _ in range(30):
            gc.collect()
            await asyncio.sleep(0.5)
            after = (threads(), fds(), rss_mib())
            if after[0] <= before[0] and after[1] <= before[1]:
                break
        await listener.leave()
        return before, after

    before, after = asyncio.run(main())
    print(
        f"\n{CYCLES} cycles: threads {before[0]} -> {after[0]}, fds {before[1]} -> {after[1]}, "
        f"RSS {before[2]:.1f} -> {after[2]:.1f} MiB ({after[2] - before[2]:+.1f})"
    )
    assert after[0] <= before[0], f"threads grew: {before[0]} -> {after[0]}"
    assert after[1] <= before[1], f"file descriptors grew: {before[1]} -> {after[1]}"
    # The allocator keeps some freed memory; a leak of even 50 KiB per cycle would show as 10 MiB.
    assert after[2] - before[2] < 10, f"RSS grew {after[2] - before[2]:.1f} MiB over {CYCLES} cycles"
