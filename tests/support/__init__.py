"""Helpers the tests share: audio and model factories, output writers, the GCS emulator and fault proxy."""
