"""The reliability suite: fuzzing, disconnects, slow readers, engine faults and
shutdown, all against a real server over real sockets."""
