"""How the agent process gives memory back to the system (glibc's allocator).

glibc serves an allocation of `mmap_threshold` bytes or more with its own mapping, unmapped when
freed, but by default it raises that threshold to the size of each such block freed (up to
32 MiB), so later images of a few MB are carved from the decoding threads' heaps and stay
resident once freed: 30 decodes of 9 MP kept 168 MB. A fixed threshold keeps image-sized
buffers in mappings of their own, returned to the system when freed (the same 30: 4 MB). The
threads share MALLOC_ARENAS heaps instead of one each (up to 8 per core), so what their small
blocks leave free is not kept once per thread."""

from __future__ import annotations

import ctypes
import logging
import platform

log = logging.getLogger(__name__)
M_ARENA_MAX = -8  # mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
MALLOC_ARENAS = 2
MMAP_THRESHOLD_BYTES = 1 << 20  # blocks of 1 MiB or more: a mapping each, unmapped when freed


def return_freed_memory(threshold: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Fix glibc's mmap threshold at `threshold` bytes for this process (setting it turns off
    its dynamic raising) and its heaps at MALLOC_ARENAS; whether both were set (False where the
    C library is not glibc)."""
    if platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)
    done = bool(libc.mallopt(M_MMAP_THRESHOLD, threshold))
    done = bool(libc.mallopt(M_ARENA_MAX, MALLOC_ARENAS)) and done
    if not done:
        log.warning("mallopt refused (mmap threshold %d, arenas %d)", threshold, MALLOC_ARENAS)
    return done
