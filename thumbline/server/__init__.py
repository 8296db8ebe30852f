"""The roof: what runs thumbline (``thumbline up``, its helpers, the standalone gateway).

Imports go down only: this package and :mod:`thumbline.cli` may import
everything; :mod:`thumbline.stream_jobs` and :mod:`thumbline.producers` import
the ground (the modules directly in :mod:`thumbline`) and
:mod:`thumbline.schemas`; the ground imports only itself and the schemas
(``tests/unit/test_layers.py``).
"""
