"""Wire adapters: one module per protocol a client may speak.

An adapter parses a client's frames into the session's inputs
(:mod:`voicetrio.core.inputs`) and renders the session's domain events
(:mod:`voicetrio.core.events`) into frames (:mod:`voicetrio.wire.adapter`).
``v1`` is the original system's protocol. Sans-IO like the core.
"""
