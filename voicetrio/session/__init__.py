"""The session (Trio): one client connection as a nursery of stages.

``connection`` composes reader, ASR stage, reply stage (or transcripts only)
and writer; the stages talk downstream only, through memory channels and
domain events. It knows engines by their Protocols and wire protocols by the
adapter interface, never the server (routes, Quart, Hypercorn).
"""
