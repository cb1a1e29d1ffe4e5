"""ONNX models: manifests, registry, runtime sessions and one module per task."""
