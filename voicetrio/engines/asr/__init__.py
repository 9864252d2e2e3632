"""Speech recognition engines: faster-whisper and its short-window decode."""
