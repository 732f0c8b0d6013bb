"""Host-side analysis of an ExecutionPlan in untimed passes: analytic counts by named convention,
bytes the framework really saves for backward, and FLOPs counted on the executed graph."""
from .analyze import analyze, prepared_model

__all__ = ["analyze", "prepared_model"]
