"""Evaluations (``ocak eval SUITE.yaml``): cases run N times on models, aliases and
registry prompt versions of a running ocak, over HTTP, graded, and reported as JSON,
a terminal table and a self-contained HTML page (docs/evals.md).

``suite`` reads the YAML; ``graders`` and ``judges`` judge answers; ``client`` talks to
the server; ``runner`` runs and checkpoints; ``results`` sums up; ``report_term`` and
``report_html`` show it.
"""
