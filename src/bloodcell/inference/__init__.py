"""Inference: the predictor (TTA, referral), LayerCAM explanations, the out-of-distribution guard, ONNX."""
