"""Classical baselines: scikit-learn pipelines registered as ``sk/...`` models."""
