"""discover: read a cluster (read-only) and build a MigrationPlan.

The plan records what each workload consumes from Kubernetes Secrets; Secret values are never
kept (a Secret read from the API is reduced to its sorted key names at once).

==============  ==============================================================================
module          what it holds
==============  ==============================================================================
``run``         :func:`~run.discover`, the one entry point that talks to a cluster: scan, read
                the Secrets' key names, build
``scan``        the paginated list of Deployments, StatefulSets and DaemonSets (per kind,
                cluster-wide or per namespace, with the per-namespace fallback)
``secrets``     the Secret reader: the key names ``envFrom`` needs, by GET or paginated list
``scanned``     what a scan hands to the builder: ``ScannedWorkload``, ``SecretLookup``
``options``     ``DiscoverOptions``, the excluded namespaces
``naming``      vault path naming (``PathTemplate``) and the default plan name
``entry``       one workload's plan entry, one function per step, a typed outcome (pure)
``build``       :func:`~build.build_plan`: the validated, deterministic plan and its summary (pure)
==============  ==============================================================================

How each consumption form maps into the plan (documented in ``docs/discover.md``):

==============================  =================================================================
pod template                    plan
==============================  =================================================================
``env[].valueFrom               ``secrets[]`` entry ``source: <secret>``, ``via: env``,
.secretKeyRef``                 ``fields: {<key>: <env name>}``
``envFrom[].secretRef``         ``source: <secret>``, ``via: envFrom``, one field per key of
                                the Secret, env name ``<prefix><key>``
secret / projected volumes      ``secretFiles[]``; file-only workloads are ``skipped``
``vault.hashicorp.com/agent-    ``source: vault-agent:<name>``, ``via: vaultAgent``, the
inject-secret-<name>``          annotation's KV v2 path as ``vaultPath``, no fields
==============================  =================================================================

Pod-spec reading is :mod:`cloudtaser.target.podspec` (shared with ``protect``'s drift check),
the naming rules :mod:`cloudtaser.plan.rules`, the overwrite guard :mod:`cloudtaser.plan.store`.
"""
