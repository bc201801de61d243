"""fleet report: the ``target audit --output json`` documents of many clusters merged into one
report (files only: it talks to no cluster and no vault, so audits carried out of air-gapped
clusters can be merged anywhere).

``merge`` (read the documents, keep one per cluster, build the report), ``result`` (the
report's Structs, ``schema/output-fleet-report.schema.json``) and ``render`` (its text and
self-contained HTML forms, with the audit page's look and helpers).
"""
