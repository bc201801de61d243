"""install: the runtime (injector).

``manifests`` (the objects, pure), ``apply`` (their server-side apply and the install record),
``uninstall`` (exactly what the record lists) and ``check`` (``target install --check``).
"""
