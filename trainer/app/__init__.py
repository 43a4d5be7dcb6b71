"""The application around the Trainer: the console scripts, the config read into settings, the
assembly of a run from them, and the run directory. See docs/architecture.md.
"""
