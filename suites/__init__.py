"""What is measured: models, data, training methods, the training loop and benchmark plans.

Pure ML content: imports neither ``harness`` nor ``targets``.
"""
