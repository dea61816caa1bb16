"""The validation flow (the data checks alone, no model), defined in the library at
:mod:`audit.orchestrate.prefect_flows`; re-exported here."""

from audit.orchestrate.prefect_flows import validation_flow

__all__ = ["validation_flow"]
