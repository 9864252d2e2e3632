"""Engines behind typing.Protocols: VAD, ASR, LLM, TTS (see base.py)."""
