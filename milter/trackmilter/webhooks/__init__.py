"""Webhooks: events POSTed to configured endpoints, signed, from a durable outbox with retries.

payload (pure: ids, body, signature), schema + outbox (SQL, written with the events),
deliver (the sender daemon). Nothing is imported here: store/sql.py imports the outbox,
and the outbox imports the store's schema, so the package itself must stay empty.
"""
