"""Smear-photo counting: detectors, counting, white-cell typing of detected cells, differential report."""
