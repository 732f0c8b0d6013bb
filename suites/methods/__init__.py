"""Training methods as policies emitting an UpdatePlan, and the one function that applies a plan."""
from .apply import OPS, apply_plan, fold_batchnorm
from .stock import BiasOnly, BpLastK, Full, LastLayer, Method
from .update_plan import PlanContext, layer_table, make_plan

__all__ = ["OPS", "apply_plan", "fold_batchnorm", "Method", "Full", "LastLayer", "BiasOnly",
           "BpLastK", "PlanContext", "layer_table", "make_plan"]
