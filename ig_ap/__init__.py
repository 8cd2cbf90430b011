"""ig_ap: when and why integrated gradients (IG) and activation patching (AP) disagree.

Modules, one idea each:

- :mod:`ig_ap.models`: load a model as a TransformerLens 4 ``TransformerBridge``
  (the embedded SmolLM2-135M, tiny random test models, or any TransformerLens name).
- :mod:`ig_ap.plots`: plotly figures and the offline renderer the book uses.
- :mod:`ig_ap.book`: run the chapters with papermill and build the book.
"""

__version__ = "0.1.0"

from ig_ap.models import EMBEDDED, ModelInfo, load_model, model_info, tokenize  # noqa: E402

__all__ = ["EMBEDDED", "ModelInfo", "load_model", "model_info", "tokenize", "__version__"]
