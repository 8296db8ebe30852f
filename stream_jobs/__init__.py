"""Stream jobs (faust-streaming): the join, the rates and the alerts.

The jobs arrive with the join issue; the topics they read and write are already
declared in :mod:`thumbline.schemas.topics`.
"""
