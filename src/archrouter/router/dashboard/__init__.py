"""The web dashboard at /dashboard: live decisions, backend load, a policy playground, capability plots."""

from archrouter.router.dashboard.routes import build

__all__ = ["build"]
