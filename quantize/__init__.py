"""Workstation pipeline: teacher -> transfer set -> student -> int8 (.tflite, .onnx) -> report.

The only package that may import torch (and only inside the stages that train or export).
"""
