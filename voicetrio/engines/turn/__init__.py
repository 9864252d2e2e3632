"""Turn judges: whether the user's turn sounds complete (Smart Turn v3.2 on
onnxruntime; a scripted judge for exact tests). The policy that uses their
verdicts is sans-IO: :mod:`voicetrio.core.turn_policy`."""
