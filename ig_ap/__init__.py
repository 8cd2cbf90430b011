"""ig_ap: when and why integrated gradients (IG) and activation patching (AP) disagree.

Modules, one idea each:

- :mod:`ig_ap.models`: load a model as a TransformerLens 4 ``TransformerBridge``
  (the embedded SmolLM2-135M, tiny random test models, or any TransformerLens name).
- :mod:`ig_ap.tasks`: the four circuit tasks (IOI, Greater-Than, Gender-Bias,
  Capital-Country): prompt pairs, batches, per-prompt metrics on last-token logits.
- :mod:`ig_ap.words`: the word lists the tasks draw from (names, templates, capitals, ...).
- :mod:`ig_ap.attribution`: the result every kernel returns, and the shared conventions
  (directions, components, units).
- :mod:`ig_ap.patching`: activation patching of every head and neuron.
- :mod:`ig_ap.ig`: integrated gradients per layer, with completeness and path profiles.
- :mod:`ig_ap.atp`: attribution patching, the first-order estimate of patching.
- :mod:`ig_ap.analysis`: statistics on score tensors: correlation, top-component
  overlap, asymmetry between methods.
- :mod:`ig_ap.ablation`: statistics that run the model: faithfulness of component sets,
  joint versus single patches.
- :mod:`ig_ap.toy`: AND/OR toy networks, where each method's right answer is known.
- :mod:`ig_ap.heads`: head sets patched jointly, one by one and as a linear combination;
  direct logit attribution; path patching.
- :mod:`ig_ap.results`: the on-disk cache of results, keyed by every input that changes them.
- :mod:`ig_ap.storage`: the cache folder, file hashes and atomic writes (used by
  :mod:`ig_ap.models` and :mod:`ig_ap.results`).
- :mod:`ig_ap.replay`: re-running the upper layers from a recorded pass (what makes the
  kernels fast).
- :mod:`ig_ap.plots`: plotly figures and the offline renderer the book uses.
- :mod:`ig_ap.book`: open a chapter, run the chapters with papermill and build the book.
"""

__version__ = "0.1.0"

from ig_ap.models import EMBEDDED, ModelInfo, load_model, model_info, tokenize  # noqa: E402
from ig_ap.tasks import Task, make_dataset  # noqa: E402
from ig_ap.attribution import Attribution  # noqa: E402
from ig_ap.patching import activation_patching  # noqa: E402
from ig_ap.ig import integrated_gradients  # noqa: E402
from ig_ap.atp import attribution_patching  # noqa: E402

__all__ = [
    "EMBEDDED", "ModelInfo", "load_model", "model_info", "tokenize",
    "Task", "make_dataset",
    "Attribution", "activation_patching", "integrated_gradients", "attribution_patching",
    "__version__",
]
