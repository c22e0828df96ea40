"""Where the memory of a running riskmon goes: `python -m bench.memprobe run -c riskmon.yaml`.

Bench-only: `riskmon` itself never imports this. It starts a sampling thread in the
daemon's own process, then runs `riskmon` with the arguments given. Every
`RISKMON_MEMPROBE_EVERY` seconds (default 60) it appends one JSON line to
`$RISKMON_MEMPROBE_DIR/probe.jsonl` with what RSS is made of, as seen from inside:

- `status`: VmRSS, RssAnon, RssFile, VmHWM (KiB) from /proc/self/status;
- `maps`: resident KiB of the largest mappings (`[heap]` is glibc's main arena, `[anon]`
  pymalloc's 256 KiB arenas, thread arenas and large mallocs, `file:...` code);
- `malloc`: glibc's `mallinfo2()` (`arena`: bytes taken from the system by malloc,
  `uordblks` in use, `fordblks` free but kept, `hblkhd` in mmapped chunks);
- `pymalloc`: arenas allocated now and their high-water mark, bytes in used blocks;
- `sqlite`: bytes SQLite holds (all connections: page caches, statements);
- `gc`: objects the collector tracks (frozen ones apart), the commonest types;
- with `RISKMON_MEMPROBE_TRACEMALLOC=N` (frames; it costs much CPU: 1,000 accounts at
  2 s then need about a core), tracemalloc starts after `RISKMON_MEMPROBE_TRACE_AFTER`
  seconds (default 60: start-up is not the question) and each sample adds the traced
  total and writes `tracemalloc-NNN.txt`: the 25 biggest differences from the first
  traced sample, by traceback.

`python -m bench.soak --probe DIR` runs the daemon this way; `python -m bench.memprobe
--summary DIR` prints the samples as a table.
"""

from __future__ import annotations

import collections
import ctypes
import ctypes.util
import functools
import gc
import json
import os
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

from monitor.cli import main as riskmon_main

DIR_VARIABLE = "RISKMON_MEMPROBE_DIR"


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


@functools.cache
def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.mallinfo2.restype = _MallInfo2
    return libc


@functools.cache
def _libsqlite3() -> ctypes.CDLL | None:
    """The libsqlite3 that Python's sqlite3 module loaded (once: each CDLL leaves cyclic
    garbage that would count among the daemon's objects)."""
    name = ctypes.util.find_library("sqlite3")
    if name is None:
        return None
    library = ctypes.CDLL(name)
    library.sqlite3_memory_used.restype = ctypes.c_int64
    return library


def _mallinfo() -> dict[str, int]:
    info = _libc().mallinfo2()
    return {field[0]: getattr(info, field[0]) for field in _MallInfo2._fields_}


def _sqlite_bytes() -> int | None:
    """sqlite3_memory_used(): what SQLite holds, all connections."""
    library = _libsqlite3()
    return None if library is None else int(library.sqlite3_memory_used())


def _status() -> dict[str, int]:
    wanted = ("VmRSS", "RssAnon", "RssFile", "VmHWM")
    text = Path("/proc/self/status").read_text()
    return {
        line.split(":")[0]: int(line.split()[1])
        for line in text.splitlines()
        if line.startswith(wanted)
    }


def _maps(top: int = 10) -> dict[str, int]:
    """Resident KiB by mapping name, the largest `top`."""
    resident: collections.Counter[str] = collections.Counter()
    name = "?"
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if not fields[0].endswith(":"):  # a mapping's header: range perms offset dev inode [path]
            path = fields[5] if len(fields) > 5 else "[anon]"
            name = "file:" + os.path.basename(path) if path.startswith("/") else path
        elif fields[0] == "Rss:":
            resident[name] += int(fields[1])
    return dict(resident.most_common(top))


def _pymalloc() -> dict[str, int]:
    """pymalloc's arena counts, from `sys._debugmallocstats()` (it writes to fd 2)."""
    with tempfile.TemporaryFile() as out:
        saved = os.dup(2)
        os.dup2(out.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        out.seek(0)
        text = out.read().decode(errors="replace")
    wanted = {
        "# arenas allocated current": "arenas",
        "# arenas highwater mark": "arenas_highwater",
        "# bytes in allocated blocks": "bytes_in_blocks",
    }
    found: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key.strip() in wanted:
            found[wanted[key.strip()]] = int(value.strip().replace(",", ""))
    return found


def _sample(started: float) -> dict[str, Any]:
    types = collections.Counter(type(o).__name__ for o in gc.get_objects())
    return {
        "t": round(time.monotonic() - started, 1),
        "status": _status(),
        "maps": _maps(),
        "malloc": _mallinfo(),
        "pymalloc": _pymalloc(),
        "sqlite": _sqlite_bytes(),
        "gc": {
            "tracked": sum(types.values()),
            "frozen": gc.get_freeze_count(),
            "counts": gc.get_count(),
            "collections": [generation["collections"] for generation in gc.get_stats()],
            "types": types.most_common(15),
        },
        "threads": [thread.name for thread in threading.enumerate()],
    }


def _probe(folder: Path, every: float, frames: int, trace_after: float) -> None:
    started = time.monotonic()
    first: tracemalloc.Snapshot | None = None
    number = 0
    while True:
        time.sleep(every)
        sample = _sample(started)
        if frames and not tracemalloc.is_tracing() and sample["t"] >= trace_after:
            tracemalloc.start(frames)
        elif tracemalloc.is_tracing():
            sample["traced"] = tracemalloc.get_traced_memory()[0]
            snapshot = tracemalloc.take_snapshot().filter_traces(
                [  # the probe's own allocations (linecache's source lines) are not the question
                    tracemalloc.Filter(False, __file__, all_frames=True),
                    tracemalloc.Filter(False, tracemalloc.__file__),
                ]
            )
            if first is None:
                first = snapshot
            lines = [f"t={sample['t']} s, traced {sample['traced']:,} B; biggest growth:"]
            for stat in snapshot.compare_to(first, "traceback")[:25]:
                lines.append(f"{stat.size_diff:+,} B ({stat.count_diff:+,} blocks)")
                lines.extend("    " + line for line in stat.traceback.format())
            (folder / f"tracemalloc-{number:03d}.txt").write_text("\n".join(lines) + "\n")
            number += 1
        with (folder / "probe.jsonl").open("a") as out:
            out.write(json.dumps(sample) + "\n")


def summary(folder: Path) -> None:
    """A table of `folder/probe.jsonl`, in MiB: `python -m bench.memprobe --summary DIR`."""
    print(
        " minute    RSS   anon   file  [heap]  [anon]  malloc used/free  pymalloc arenas"
        "/used  sqlite  gc objects"
    )
    for line in (folder / "probe.jsonl").read_text().splitlines():
        sample = json.loads(line)
        status, maps, malloc, pymalloc = (
            sample["status"],
            sample["maps"],
            sample["malloc"],
            sample["pymalloc"],
        )
        print(
            f"{sample['t'] / 60:7.1f} {status['VmRSS'] / 1024:6.1f} {status['RssAnon'] / 1024:6.1f}"
            f" {status['RssFile'] / 1024:6.1f} {maps.get('[heap]', 0) / 1024:7.1f}"
            f" {maps.get('[anon]', 0) / 1024:7.1f}"
            f" {malloc['uordblks'] / 2**20:11.1f}/{malloc['fordblks'] / 2**20:<4.1f}"
            f" {pymalloc.get('arenas', 0):11d}/{pymalloc.get('bytes_in_blocks', 0) / 2**20:<5.1f}"
            f" {(sample['sqlite'] or 0) / 2**20:7.2f} {sample['gc']['tracked']:11d}"
            + (f"  traced {sample['traced'] / 2**20:.1f}" if "traced" in sample else "")
        )


def main(argv: list[str]) -> int:
    if argv[:1] == ["--summary"]:
        summary(Path(argv[1]))
        return 0
    folder = Path(os.environ[DIR_VARIABLE])
    folder.mkdir(parents=True, exist_ok=True)
    every = float(os.environ.get("RISKMON_MEMPROBE_EVERY", "60"))
    frames = int(os.environ.get("RISKMON_MEMPROBE_TRACEMALLOC", "0"))
    trace_after = float(os.environ.get("RISKMON_MEMPROBE_TRACE_AFTER", "60"))
    threading.Thread(
        target=_probe, args=(folder, every, frames, trace_after), name="memprobe", daemon=True
    ).start()
    return riskmon_main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
