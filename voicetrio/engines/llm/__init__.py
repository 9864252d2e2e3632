"""Language models: the embedded llama.cpp worker and any OpenAI-compatible server."""
