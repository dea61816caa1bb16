"""Deployments with cron schedules (``faceage-audit deploy``), built in the library at
:mod:`audit.orchestrate.prefect_flows`; re-exported here."""

from audit.orchestrate.prefect_flows import build_deployments

__all__ = ["build_deployments"]
