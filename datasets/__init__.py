"""Datasets for torchcamp's tasks: readers of the on-disk layouts and synthetic stand-ins."""
