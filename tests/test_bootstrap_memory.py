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
    assert np.array_equal(boot.counts, _at_once(300, 50, 2)) and boot.counts.dtype == np.uint8
    small = bootstrap_weights(300, 50, np.random.default_rng(2), compact=True)
    assert small.dtype == np.uint8 and np.array_equal(small, _at_once(300, 50, 2))
    assert bootstrap_weights(10, 0, np.random.default_rng(0)).shape == (0, 10)


def test_a_count_too_wide_for_a_byte_widens_the_array():
    """Forced with a generator that always draws subject 0: 300 draws of it in a resample."""

    class Always:
        def integers(self, low, high, size):
            return np.zeros(size, dtype=np.int64)

    counts = draw_counts(Always(), 300, 2, dtype=np.uint8)
    assert counts.dtype == np.uint32 and (counts[:, 0] == 300).all()


def test_resample_products_in_blocks_and_totals_by_group_equal_the_plain_products():
    from audit.stats.bootstrap import resample_dot

    rng = np.random.default_rng(3)
    w = bootstrap_weights(500, 37, rng, compact=True)
    v = rng.normal(size=(500, 3))
    for elements in (1, 600, 10**7):
        np.testing.assert_allclose(resample_dot(w, v, elements), w.astype(float) @ v, rtol=1e-12)
        np.testing.assert_allclose(
            resample_dot(w, v[:, 0], elements), w.astype(float) @ v[:, 0], rtol=1e-12
        )
    ids = rng.integers(0, 200, 700)  # photos of 200 subjects, a subject's photos in any group
    groups = rng.integers(-1, 4, 700)  # -1: left out
    boot = SubjectBootstrap.draw(ids, 25, np.random.default_rng(5))
    cols = rng.normal(size=(700, 2))
    for elements in (1, 10**7):
        point, samples = boot.totals(cols, groups, 4, elements=elements)
        for g in range(4):
            mine = groups == g
            per_subject = np.zeros((boot.n_subjects, 2))
            np.add.at(per_subject, boot.subject_codes[mine], cols[mine])
            np.testing.assert_allclose(point[g], cols[mine].sum(axis=0), rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(
                samples[:, g], boot.counts.astype(float) @ per_subject, rtol=1e-12, atol=1e-12
            )
