"""The emulator harness: real storage servers on 127.0.0.1 for the test session (see fixtures.py)."""
