"""odt-bench harness: target-independent plan loading, schema, runner, analysis and reports."""
__version__ = "0.1.0"
