"""The combined audit flow (site bundles pooled across sites), defined in the library at
:mod:`audit.orchestrate.prefect_flows`; re-exported here."""

from audit.orchestrate.prefect_flows import combine_flow

__all__ = ["combine_flow"]
