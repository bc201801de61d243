"""discover: read a cluster (read-only) and build a MigrationPlan.

The plan records what each workload consumes from Kubernetes Secrets.
"""
