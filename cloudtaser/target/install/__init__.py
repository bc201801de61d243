"""install: the runtime (injector).

Its manifests, their server-side apply, the install check and uninstall.
"""
