"""Operating a namespace: ``status``, ``repair`` (``check --repair``) and ``acl``.

Imports the domain and the engine; never ``scheduler.cli``.
"""
