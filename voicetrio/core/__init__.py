"""The sans-IO core: what a voice session decides, with no I/O.

Numbers, bytes and events in, decisions out: the endpointer, the phrase
splitter, the work queue, the capacity model, the conversation memory, the
domain events a session produces and the inputs it accepts. No Trio, no
sockets, no engines, no wire format (the import contract in
``.importlinter`` keeps it so); tested with plain pytest and exact numbers.
"""
