"""Seeding, mixture allocation and split assembly shared by the generated tasks.

Every generator draws from its own seed, derived from the task seed and the generator's name, so
that changing one generator's fraction leaves the samples of the others unchanged.
"""

from __future__ import annotations

import contextlib
import logging
import zlib
from collections.abc import Iterator

import numpy as np

from mts.tasks.base import Split

logger = logging.getLogger(__name__)


def derive_seed(seed: int, *names: str) -> int:
    """Return a 32-bit seed for the stream `names` of task seed `seed`, stable across runs."""
    # crc32 rather than hash(): Python salts str hashes per process, which would break determinism.
    entropy = [seed, *(zlib.crc32(name.encode("utf-8")) for name in names)]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint32)[0])


def rng_for(seed: int, *names: str) -> np.random.Generator:
    """Return a numpy Generator for the stream `names` of task seed `seed`."""
    return np.random.default_rng(derive_seed(seed, *names))


@contextlib.contextmanager
def seeded_global_numpy(seed: int) -> Iterator[None]:
    """Seed numpy's global RNG for the duration of the block, then restore the caller's state.

    Third-party generators such as `mnist1d.transform` draw from `np.random` directly. Restoring
    the state keeps the caller's own global draws unchanged by building a task.
    NOTE: another thread drawing from `np.random` inside this block breaks determinism.
    """
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def allocate_counts(mixture: dict[str, float], total: int) -> dict[str, int]:
    """Split `total` samples across generators in proportion to `mixture` (relative weights).

    Largest-remainder rounding makes the counts sum to `total` exactly. Ties go to the generator
    listed first, so equal remainders always resolve the same way.
    """
    names = list(mixture)
    weights = np.array([mixture[name] for name in names], dtype=np.float64)
    exact = weights / weights.sum() * total
    counts = np.floor(exact).astype(np.int64)
    remainders = exact - counts
    order = sorted(range(len(names)), key=lambda i: (-remainders[i], i))
    for i in order[: total - int(counts.sum())]:
        counts[i] += 1
    return {name: int(count) for name, count in zip(names, counts) if count > 0}


def balanced_labels(n: int, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """Return `n` shuffled labels with class counts that differ by at most one."""
    labels = np.arange(n, dtype=np.int64) % num_classes
    return rng.permutation(labels)


def partition(n: int, sizes: dict[str, int], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Split a random permutation of range(n) into disjoint index sets of the given sizes."""
    return split_order(rng.permutation(n), sizes)


def split_order(order: np.ndarray, sizes: dict[str, int]) -> dict[str, np.ndarray]:
    """Cut consecutive runs of `order` into disjoint, sorted index sets of the given sizes."""
    parts = {}
    start = 0
    for name, size in sizes.items():
        parts[name] = np.sort(order[start : start + size])
        start += size
    return parts


def make_split(x: np.ndarray, y: np.ndarray, source: np.ndarray) -> Split:
    """Return a Split with the dtypes and memory layout every consumer expects."""
    return Split(
        x=np.ascontiguousarray(x, dtype=np.float32),
        y=np.ascontiguousarray(y, dtype=np.int64),
        source=np.ascontiguousarray(source, dtype=np.int64),
    )


def shuffle_pool(
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]], rng: np.random.Generator
) -> tuple[Split, np.ndarray]:
    """Concatenate per-generator (x, y, source, quality) parts and shuffle them together.

    Shuffling keeps a consumer that slices the pool in order from seeing one generator at a time.
    """
    x = np.concatenate([part[0] for part in parts])
    y = np.concatenate([part[1] for part in parts])
    source = np.concatenate([part[2] for part in parts])
    quality = np.concatenate([part[3] for part in parts])
    order = rng.permutation(len(y))
    pool = make_split(x[order], y[order], source[order])
    return pool, np.ascontiguousarray(quality[order], dtype=np.int8)
