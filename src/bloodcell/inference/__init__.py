"""Inference: the predictor (TTA, referral), Grad-CAM, the out-of-distribution guard, ONNX."""
