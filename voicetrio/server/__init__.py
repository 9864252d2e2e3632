"""The server: Quart-Trio on Hypercorn, routes, admission, health, metrics,
the HTTP API, the process supervisor. It composes sessions and engines; no
layer below imports it.
"""
