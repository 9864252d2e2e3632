"""Text to speech: pyttsx3 over espeak-ng, Piper voices on onnxruntime, and
the worker process that runs a synthesizer that is not thread-safe."""
