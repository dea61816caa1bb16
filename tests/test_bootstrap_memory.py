"""The subject bootstrap's counts are drawn a block of resamples at a time (bounded memory)
and are exactly the counts of one draw of all resamples at once: the same numbers as before
the change, and the generator's stream does not depend on how the draws are split."""

from __future__ import annotations

import numpy as np
import pytest

from audit.stats.bootstrap import SubjectBootstrap, bootstrap_weights, draw_counts


def _at_once(n: int, n_boot: int, seed: int) -> np.ndarray:
    """The counts as they were computed before: every draw at once, one bincount."""
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    offsets = (np.arange(n_boot) * n)[:, None]
    flat = np.bincount((idx + offsets).ravel(), minlength=n_boot * n)
    return flat.reshape(n_boot, n).astype(float)


@pytest.mark.parametrize(
    ("n", "n_boot", "chunk"), [(1, 5, 1), (7, 3, 10), (1000, 200, 3001), (5000, 40, 10**7)]
)
def test_blocks_of_draws_give_the_counts_of_one_draw(n, n_boot, chunk):
    counts = draw_counts(np.random.default_rng(4), n, n_boot, chunk=chunk)
    assert np.array_equal(counts, _at_once(n, n_boot, 4))
    assert counts.dtype == np.float64 and (counts.sum(axis=1) == n).all()


def test_the_bootstrap_entry_points_draw_the_same_counts():
    assert np.array_equal(
        bootstrap_weights(300, 50, np.random.default_rng(2)), _at_once(300, 50, 2)
    )
    ids = np.repeat(np.arange(300), 2)  # two photos a subject
    boot = SubjectBootstrap.draw(ids, 50, np.random.default_rng(2))
    assert np.array_equal(boot.counts, _at_once(300, 50, 2))
    assert bootstrap_weights(10, 0, np.random.default_rng(0)).shape == (0, 10)
