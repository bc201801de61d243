"""Changes to Git-owned workloads as files the owning team commits (issue 32, docs/gitops.md).

:class:`~cloudtaser.target.gitops.change.TemplateChange` is the one representation of "a change
to a pod template" that protect and finalize hand over instead of patching live; the emitter
(:mod:`cloudtaser.target.gitops.emit`) writes it in each owner's form.
"""
