"""ig_ap: when and why integrated gradients (IG) and activation patching (AP) disagree.

Modules, one idea each, on floors: a module imports from its own floor or those below, never from above
(``tests/test_contract.py`` reads the floors from this list and checks every import).

1. Bottom:

   - :mod:`ig_ap.storage`: the cache folder, file hashes and atomic writes.
   - :mod:`ig_ap.words`: the word lists the tasks draw from (names, templates, capitals, ...).
   - :mod:`ig_ap.replay`: re-running the upper layers from a recorded pass, and the one batching
     rule (:func:`~ig_ap.replay.copies_per_pass`, :data:`~ig_ap.replay.MEMORY_MB`) every pass of
     patched copies follows.
   - :mod:`ig_ap.analysis`: statistics on score tensors: intervals, correlation, top-component
     overlap, asymmetry between directions.

2. Models and tasks:

   - :mod:`ig_ap.models`: load a model as a TransformerLens 4 ``TransformerBridge`` (the
     embedded SmolLM2-135M, tiny random test models, or any TransformerLens name).
   - :mod:`ig_ap.tasks`: the four circuit tasks (IOI, Greater-Than, Gender-Bias,
     Capital-Country): prompt pairs, batches, per-prompt metrics on last-token logits.
   - :mod:`ig_ap.task_files`: your own task, prompt pairs read from a CSV, JSONL or JSON file
     (ours, auto-circuit's, EAP-IG's layouts), every row checked before any model runs.
   - :mod:`ig_ap.attribution`: the kernel contract: the result every kernel returns, the checked
     options they share, the two directions (:func:`~ig_ap.attribution.base_and_source`) and the
     options that change only speed (:data:`~ig_ap.attribution.SPEED_OPTIONS`).

3. Kernels, on the contract:

   - :mod:`ig_ap.patching`: activation patching of every head and neuron.
   - :mod:`ig_ap.ig`: integrated gradients per layer, with completeness and path profiles, and along
     the whole network (each component's conductance).
   - :mod:`ig_ap.atp`: attribution patching, the first-order estimate of patching, and AtP* (its QK fix and
     GradDrop).
   - :mod:`ig_ap.ablation`: faithfulness of component sets (and MIB's CPR and CMD of circuits), joint
     versus single patches.
   - :mod:`ig_ap.interactions`: why IG and AP disagree: joint patches of a layer's components, their
     pairwise interactions and the share of IG − AP they explain (IG of one component alone is its AP).

4. Heads, tasks' readings and toys:

   - :mod:`ig_ap.heads`: head mechanics only: head sets patched jointly, one by one and as a
     linear combination; direct logit attribution; path patching; attention readout.
   - :mod:`ig_ap.ioi`: the IOI reading of those measurements (published head classes, backups by
     response, mover roles, S-inhibition senders, copy suppression).
   - :mod:`ig_ap.toy`: AND/OR toy networks, where each method's right answer is known (one with its
     AND's inputs in different layers).

5. Results: :mod:`ig_ap.results`: the on-disk cache, keyed by every input that changes a
   result; :mod:`ig_ap.export`: every cached attribution as one long table.

6. Scale: :mod:`ig_ap.sweep`: sweeps as Ray tasks, sharded, resumable, merged into the cache.

7. The book: :mod:`ig_ap.plots`: plotly figures, the offline renderer and a page's numbered
   figures; :mod:`ig_ap.findings`: a chapter's answer and claims, glued, and the Findings page
   gathered from them; :mod:`ig_ap.book`: a chapter's object (its results, its page, its
   findings) and the runner (papermill, then Jupyter Book).
"""

__version__ = "0.1.0"

from ig_ap.models import EMBEDDED, ModelInfo, load_model, model_info, tokenize  # noqa: E402
from ig_ap.tasks import Task, make_dataset  # noqa: E402
from ig_ap.attribution import Attribution  # noqa: E402
from ig_ap.patching import activation_patching  # noqa: E402
from ig_ap.ig import integrated_gradients  # noqa: E402
from ig_ap.atp import atp_star, attribution_patching  # noqa: E402

__all__ = [
    "EMBEDDED", "ModelInfo", "load_model", "model_info", "tokenize",
    "Task", "make_dataset",
    "Attribution", "activation_patching", "integrated_gradients", "attribution_patching", "atp_star",
    "__version__",
]
