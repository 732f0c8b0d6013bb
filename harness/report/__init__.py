"""Markdown report with PNG figures from the long table of benchmark results (no torch needed)."""
from .render import render

__all__ = ["render"]
