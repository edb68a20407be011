"""Datasets: registry, location, fetching, integrity checks, frozen splits and torch datasets.

Importing this package has no side effects: nothing is created or downloaded.
"""
