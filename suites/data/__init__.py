"""Datasets: synthetic tensors for cost-only cells and the MNIST-5k transfer task.

Device side: turning a dataset artifact (or a synthetic spec) into batches. The host side that
builds the artifact from the package-shipped images lives in ``suites.data.mnist``.
"""
from .batches import Batches, make_batches

NAMES = ("synthetic", "mnist5k-transfer")

__all__ = ["Batches", "make_batches", "NAMES"]
