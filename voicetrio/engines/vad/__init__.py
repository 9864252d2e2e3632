"""Voice activity detectors: webrtcvad."""
