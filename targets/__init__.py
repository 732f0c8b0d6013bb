"""Target drivers (one module per kind of device), found by the harness through entry points."""
