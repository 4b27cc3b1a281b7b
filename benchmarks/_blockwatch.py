"""Diagnostics for event-loop blocks: which code runs while the loop is late (a sampling watchdog).

A heartbeat coroutine stamps the time every millisecond; a watchdog thread samples the loop
thread's stack whenever the stamp is older than the threshold, and counts the innermost frames of
the provider (or, if none, of any library) per sample. ``report()`` prints the most sampled places.
Only for finding causes (``ICEPROD_BENCH_SLOW_MS=10 python benchmarks/trigger_scale.py ...``); the
figures of a run with it on are not comparable, since sampling takes the GIL.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections import Counter


class BlockWatch:
    def __init__(self, threshold_ms: float, sample_ms: float = 2.0) -> None:
        self.threshold = threshold_ms / 1000
        self.sample = sample_ms / 1000
        self.samples: Counter[str] = Counter()
        #: per block (keyed by the heartbeat it outlived): its length so far and its samples
        self.blocks: dict[float, tuple[float, list[str]]] = {}
        self._beat = time.perf_counter()
        self._stop = threading.Event()
        self._loop_thread = threading.get_ident()

    def start(self) -> None:
        asyncio.get_running_loop().create_task(self._heartbeat())
        threading.Thread(target=self._watch, daemon=True, name="blockwatch").start()

    async def _heartbeat(self) -> None:
        while not self._stop.is_set():
            self._beat = time.perf_counter()
            await asyncio.sleep(0.001)

    def _watch(self) -> None:
        while not self._stop.wait(self.sample):
            if time.perf_counter() - self._beat < self.threshold:
                continue
            frame = sys._current_frames().get(self._loop_thread)
            if frame is None:
                continue
            stack = []  # (file, line, function), innermost first: cheap, no source lines read
            while frame is not None and len(stack) < 40:
                stack.append((frame.f_code.co_filename, frame.f_lineno, frame.f_code.co_name))
                frame = frame.f_back
            ours = [f for f in stack if "airflow_provider_iceprod" in f[0] or "benchmarks" in f[0]]
            picked = stack[:2] + ours[:3]
            key = " <- ".join(f"{f[0].rsplit('/', 2)[-1]}:{f[1]} {f[2]}" for f in picked)
            self.samples[key] += 1
            beat = self._beat
            _, keys = self.blocks.get(beat, (0.0, []))
            keys.append(key)
            self.blocks[beat] = (time.perf_counter() - beat, keys)

    def report(self, top: int = 15) -> None:
        self._stop.set()
        total = sum(self.samples.values())
        print(
            f"blockwatch: {total} samples of {self.sample * 1000:.0f} ms while the loop was late",
            file=sys.stderr,
        )
        for key, n in self.samples.most_common(top):
            print(f"  {n:5d}  {key}", file=sys.stderr)
        longest = sorted(self.blocks.values(), key=lambda b: -b[0])[:5]
        for length, keys in longest:
            print(f"block of at least {length * 1000:.0f} ms:", file=sys.stderr)
            for key, n in Counter(keys).most_common(6):
                print(f"  {n:5d}  {key}", file=sys.stderr)
