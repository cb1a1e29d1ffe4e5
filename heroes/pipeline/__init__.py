"""The pass over the evidence: discover -> identify -> decode -> (infer) -> score -> persist."""

# forensic images register their openers with the walker (dfVFS itself is imported on first use)
from heroes.pipeline import diskimage as _diskimage  # noqa: F401
