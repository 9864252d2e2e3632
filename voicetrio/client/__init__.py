"""The client (trio-websocket): the wire protocol from the client's side.

It knows the wire format (:mod:`voicetrio.wire.v1`), never the server's internals.
"""
