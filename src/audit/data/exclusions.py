"""Who the data checks excluded, by group: whether quality checks (a face detector, an image
check, a missing value) fell alike on every group (TRIPOD+AI item 7). A detector that misses
darker or older faces more often removes those patients before any metric is computed, so
the share excluded by group is reported on the page, named in the verdict's
``quarantine_fraction`` check and in each model card's limitations."""

from __future__ import annotations

import pandas as pd

ATTRIBUTES = ("sex", "race", "cancer_type", "site")
MISSING = "(missing)"  # rows dropped while loading have no values to group by


def exclusions_by_group(rows: pd.DataFrame) -> list[dict]:
    """Per attribute with a group that lost a row: each group's manifest rows (``n``),
    ``excluded`` rows and their ``share`` (``rows``: ``cohort_rows`` with ``included``)."""
    out = []
    if rows.empty or rows["included"].all():
        return out
    for attribute in ATTRIBUTES:
        if attribute not in rows or rows[attribute].isna().all():
            continue
        g = rows.assign(excluded=~rows["included"].astype(bool)).groupby(
            rows[attribute].fillna(MISSING), sort=True
        )["excluded"]
        table = pd.DataFrame({"n": g.size(), "excluded": g.sum()})
        out.append(
            {
                "attribute": attribute,
                "groups": [
                    {
                        "name": k,
                        "n": int(r["n"]),
                        "excluded": int(r["excluded"]),
                        "share": r["excluded"] / r["n"],
                    }
                    for k, r in table.iterrows()
                ],
            }
        )
    return out


def most_excluded(rows: pd.DataFrame, k: int = 3) -> str:
    """The ``k`` groups that lost the largest share of their rows, as text (``race = Black
    30% (6 of 20)``); empty when no row was excluded. Groups of one row are left out (one
    excluded photo is 100% of them and says nothing), and so is ``(missing)``: rows the
    loader could not read have no group to be counted in."""
    groups = [
        (g["share"], f"{e['attribute']} = {g['name']}", g)
        for e in exclusions_by_group(rows)
        for g in e["groups"]
        if g["excluded"] and g["n"] > 1 and g["name"] != MISSING
    ]
    groups.sort(key=lambda x: (-x[0], x[1]))
    return ", ".join(
        f"{label} {g['share']:.0%} ({g['excluded']} of {g['n']})" for _, label, g in groups[:k]
    )
