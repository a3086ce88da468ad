"""Using a trained run: class probabilities for new images (`predict`) and the inference branch as ONNX or TorchScript
(`export`).
"""
