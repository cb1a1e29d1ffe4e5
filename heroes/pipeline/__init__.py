"""The pass over the evidence: discover -> identify -> decode -> (infer) -> score -> persist."""
