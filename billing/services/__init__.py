"""Writes of the billing app: member limits (limits.py) and the anchor day
(anchor.py). Usage itself is written by alerts.services.consume and
alerts.services.ingest, which fire alerts in the same transaction.
"""
