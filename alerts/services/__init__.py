"""Writes of the alerts app, and the use cases that span billing and alerts.

- rules.py: when an alert fires (`crossed`), and recording a firing once.
- consume.py, ingest.py: recording usage; each fires what it crossed in
  its own transaction.
- changes.py: changes to accounts or billing that re-evaluate the alerts.
- configuration.py: the alerts an organization sets.
"""
