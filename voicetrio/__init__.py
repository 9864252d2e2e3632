"""voicetrio: a real-time voice assistant server on Trio."""

__version__ = "0.1.0"
