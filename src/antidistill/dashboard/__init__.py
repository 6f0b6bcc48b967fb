"""The operators' dashboard: server-rendered pages under ``/dashboard`` on the gateway's port, behind
the admin credential (see ``routes.py``; README section "Operators' dashboard").

Pages: overview (requests, flags, actions over time; top campaigns by score and volume; live
findings), accounts and clusters (lists), an account (timeline, reasons, sample prompts with their
template highlighted, watermark keys, decisions and the operator's buttons), a cluster (linked
accounts as a graph with labelled edges, volume, first/last seen, "block cluster") and audits.
"""

from __future__ import annotations

from antidistill.dashboard.routes import Dashboard, dashboard_routes

__all__ = ["Dashboard", "dashboard_routes"]
