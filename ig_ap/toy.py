"""AND/OR toy networks: where the right answer of each attribution method is known.

A *gate net* maps two binary inputs through ``Linear → ReLU → Linear → Sigmoid`` to the
probability that the gate is on. Trained on the AND or the OR truth table, it gives the
cleanest case of a *latent* component:

- in an AND, each input matters only when the other is on. *Denoising* (turn one input on
  in the all-off run) barely moves the output; *noising* (turn one input off in the all-on
  run) takes the whole output away. Denoising misses AND components.
- in an OR, the reverse: turning one input on in the all-off run gives the whole output,
  turning one off in the all-on run changes nothing. Noising misses OR components.
- IG integrates along the straight line from one run to the other, on which both inputs
  move together, so it credits both inputs of an AND or an OR, and by symmetry about
  half of the effect each, in either direction (the two directions are the same path run
  backwards: exactly opposite attributions).

The functions here follow the language-model kernels' conventions (:mod:`ig_ap.patching`,
:mod:`ig_ap.ig`): clean = all inputs on, corrupted = all off; ``direction="denoising"``
patches clean values into the corrupted run, ``"noising"`` the reverse; AP scores are
(metric(patched) − metric(base run)) / (metric(clean) − metric(corrupted)); IG scores are
divided by the same gap, so one layer's IG scores sum to +1 (denoising) or −1 (noising)
up to the quadrature error, which is returned.

Units are the network's ``"input"`` features or its ``"hidden"`` units (after the ReLU).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Sequence

import torch
from jaxtyping import Float
from torch import Tensor, nn

from ig_ap.analysis import component_asymmetry
from ig_ap.attribution import base_and_source, check_direction
from ig_ap.ig import quadrature

TRUTH_TABLES: dict[str, Float[Tensor, "4"]] = {
    "and": torch.tensor([0.0, 0.0, 0.0, 1.0]),
    "or": torch.tensor([0.0, 1.0, 1.0, 1.0]),
}
"""Targets for the inputs of :data:`INPUTS`, in order."""

INPUTS: Float[Tensor, "4 2"] = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
"""The four inputs of a two-input gate."""

LAYERS = ("input", "hidden")
METRICS = ("probability", "logit")


class ToyError(ValueError):
    """A toy network cannot be built or attributed as asked."""


class GateNet(nn.Module):
    """``Linear(2, hidden) → ReLU → Linear(hidden, 1) → Sigmoid``: the original notebook's net when ``hidden=1``."""

    def __init__(self, hidden: int = 1):
        super().__init__()
        self.hidden = hidden
        self.model = nn.Sequential(nn.Linear(2, hidden), nn.ReLU(), nn.Linear(hidden, 1), nn.Sigmoid())

    def units(self, x: Float[Tensor, "batch 2"], layer: str) -> Float[Tensor, "batch unit"]:
        """The activations of ``layer`` (``"input"`` or ``"hidden"``) for inputs ``x``."""
        _check_layer(layer)
        return x if layer == "input" else self.model[1](self.model[0](x))

    def from_units(self, value: Float[Tensor, "batch unit"], layer: str, metric: str = "probability") -> Float[Tensor, "batch"]:
        """The metric when ``layer`` takes ``value`` (the rest of the net runs from there)."""
        _check_layer(layer)
        if metric not in METRICS:
            raise ToyError(f"unknown metric {metric!r}; use one of {', '.join(METRICS)}")
        hidden = self.model[1](self.model[0](value)) if layer == "input" else value
        logit = self.model[2](hidden)[:, 0]
        return torch.sigmoid(logit) if metric == "probability" else logit

    def forward(self, x: Float[Tensor, "batch 2"]) -> Float[Tensor, "batch 1"]:
        return self.model(x)


def _check_layer(layer: str) -> None:
    if layer not in LAYERS:
        raise ToyError(f"unknown layer {layer!r}; use one of {', '.join(LAYERS)}")


def accuracy(net: GateNet, gate: str) -> float:
    """Fraction of the four inputs the net classifies right (output > 0.5)."""
    with torch.no_grad():
        predicted = net(INPUTS)[:, 0] > 0.5
    return (predicted == TRUTH_TABLES[gate].bool()).float().mean().item()


def _check_training(gate: str, hidden: int, optimizer: str) -> None:
    if gate not in TRUTH_TABLES:
        raise ToyError(f"unknown gate {gate!r}; use 'and' or 'or'")
    if optimizer not in ("sgd", "adam"):
        raise ToyError(f"unknown optimizer {optimizer!r}; use 'sgd' or 'adam'")
    if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
        raise ToyError(f"hidden must be a positive int, got {hidden!r}")


def _initial(hidden: int, seed: int, attempt: int) -> GateNet:
    """The initialisation of attempt ``attempt`` from ``seed`` (PyTorch's default initialisation, seeded)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed * 1000 + attempt)
        return GateNet(hidden)


def _train(net: GateNet, gate: str, epochs: int, lr: float, optimizer: str, checkpoints=()) -> dict[int, GateNet]:
    """Train ``net`` in place for ``epochs`` full-batch steps; copies of it after each epoch count in ``checkpoints``."""
    target = TRUTH_TABLES[gate][:, None]
    step = (torch.optim.SGD if optimizer == "sgd" else torch.optim.Adam)(net.parameters(), lr=lr)
    saved = {}
    for epoch in range(1, epochs + 1):
        step.zero_grad()
        loss = nn.functional.binary_cross_entropy(net(INPUTS), target)
        loss.backward()
        step.step()
        if epoch in checkpoints:
            saved[epoch] = copy.deepcopy(net).eval()
    return saved


def train_gate(
    gate: str, hidden: int = 1, seed: int = 0, epochs: int = 1000, lr: float = 0.1, optimizer: str = "sgd", restarts: int = 50
) -> GateNet:
    """A gate net trained on ``gate`` (``"and"`` or ``"or"``) to 100% accuracy, reproducibly from ``seed``.

    The original notebook's recipe by default: full-batch SGD (lr 0.1, 1000 epochs) on the
    binary cross-entropy of the four inputs, from PyTorch's default initialisation. It
    stops short of saturating the sigmoid, so the effects of single inputs are graded, not
    all-or-nothing (``optimizer="adam"`` trains to saturation). A ReLU net this small can
    start with a dead unit or stall; then training restarts from the next initialisation
    (seeded from ``seed`` and the attempt number), at most ``restarts`` times, else
    :class:`ToyError`.
    """
    return training_run(gate, hidden, seed, [epochs], lr, optimizer, restarts)[epochs]


def training_run(
    gate: str, hidden: int = 1, seed: int = 0, epochs: Sequence[int] = (50, 100, 200, 400, 1000, 2000), lr: float = 0.1,
    optimizer: str = "sgd", restarts: int = 50,
) -> dict[int, GateNet]:
    """One initialisation trained once, with the net saved after each of ``epochs``: a training-length sweep that holds
    the initialisation, the data and the optimiser fixed.

    The initialisation is the first one from ``seed`` (as in :func:`train_gate`) whose net
    classifies all four inputs right after the *longest* training; shorter checkpoints of
    that same run may not yet (check :func:`accuracy`). :class:`ToyError` when no start
    reaches 100% in ``restarts`` attempts.
    """
    _check_training(gate, hidden, optimizer)
    epochs = sorted({int(e) for e in epochs})
    if not epochs or epochs[0] < 1:
        raise ToyError(f"epochs must be positive training lengths, got {epochs!r}")
    for attempt in range(restarts):
        saved = _train(_initial(hidden, seed, attempt), gate, epochs[-1], lr, optimizer, checkpoints=set(epochs))
        if accuracy(saved[epochs[-1]], gate) == 1.0:
            return saved
    raise ToyError(f"no {gate} net with {hidden} hidden unit(s) reached 100% accuracy in {restarts} starts from seed {seed}")


def input_shares(net: GateNet, direction: str = "denoising", n_steps: int = 50) -> Float[Tensor, "2"]:
    """Each input's IG share of the gap (denoising: the two add up to 1 by completeness), larger first.

    The mean of the two is 1/2 by completeness whatever the net; how the gap is split
    between the inputs is what a net decides.
    """
    return integrated_gradients(net, direction, "input", n_steps=n_steps).scores.sort(descending=True).values


def _runs(net: GateNet, layer: str, metric: str):
    clean_x, corrupted_x = INPUTS[3:4], INPUTS[0:1]  # all on, all off
    with torch.no_grad():
        clean, corrupted = net.units(clean_x, layer), net.units(corrupted_x, layer)
        m_clean, m_corrupted = net.from_units(clean, layer, metric), net.from_units(corrupted, layer, metric)
    gap = (m_clean - m_corrupted).item()
    if abs(gap) < 1e-9:
        raise ToyError("the net gives the same output for all-on and all-off inputs; nothing to attribute")
    return clean[0], corrupted[0], m_clean.item(), m_corrupted.item(), gap


def activation_patching(net: GateNet, direction: str = "denoising", layer: str = "input", metric: str = "probability") -> Float[Tensor, "unit"]:
    """AP of every unit of ``layer`` between the all-on (clean) and the all-off (corrupted) input, normalised."""
    direction = check_direction(direction)
    clean, corrupted, m_clean, m_corrupted, gap = _runs(net, layer, metric)
    (base, m_base), (other, _) = base_and_source(direction, (clean, m_clean), (corrupted, m_corrupted))
    patched = base.repeat(len(base), 1)
    index = torch.arange(len(base))
    patched[index, index] = other  # row i: unit i takes the other run's value
    with torch.no_grad():
        return (net.from_units(patched, layer, metric) - m_base) / gap


def attribution_patching(net: GateNet, direction: str = "denoising", layer: str = "input", metric: str = "probability") -> Float[Tensor, "unit"]:
    """AtP of every unit of ``layer``: the gradient of the metric at the base run times (other run − base run), normalised
    as :func:`activation_patching` (its first-order estimate; they differ where a unit's own effect bends)."""
    direction = check_direction(direction)
    clean, corrupted, _, _, gap = _runs(net, layer, metric)
    base, other = base_and_source(direction, clean, corrupted)
    point = base[None].clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(net.from_units(point, layer, metric).sum(), point)
    return (grad[0] * (other - base) / gap).detach()


def saturating_net(steepness: float = 10.0) -> GateNet:
    """A net built by hand whose output is its first input alone, through a saturated sigmoid: the case where AtP misses
    what AP and IG agree on.

    ``hidden = relu(x₁ + 0.1)``, ``output = sigmoid(steepness · (hidden − 0.6))``: input 1
    takes the output from sigmoid(−steepness/2) to sigmoid(+steepness/2), input 2 does
    nothing. Alone in its game (input 2 never matters), input 1's IG is its AP (the whole
    gap, both directions), but the gradient at either run is in the flat tail of the
    sigmoid, so AtP is a small fraction of it: the component's own effect *saturates*.
    """
    net = GateNet(1)
    with torch.no_grad():
        net.model[0].weight.copy_(torch.tensor([[1.0, 0.0]]))
        net.model[0].bias.fill_(0.1)
        net.model[2].weight.fill_(steepness)
        net.model[2].bias.fill_(-0.6 * steepness)
    return net


@dataclass(frozen=True)
class ToyIG:
    """IG scores of one layer's units (normalised by the clean−corrupted gap) and the completeness error."""

    scores: Float[Tensor, "unit"]
    error: float


def integrated_gradients(
    net: GateNet, direction: str = "denoising", layer: str = "input", metric: str = "probability", n_steps: int = 50
) -> ToyIG:
    """IG of every unit of ``layer``, from the baseline run's values to the input run's, normalised.

    Denoising: baseline all-off, input all-on; noising: the reverse. Gauss-Legendre
    quadrature (:func:`ig_ap.ig.quadrature`); ``error`` is |sum of the scores − (+1 or −1)|.
    """

    direction = check_direction(direction)
    clean, corrupted, _, _, gap = _runs(net, layer, metric)
    start, end = base_and_source(direction, clean, corrupted)
    alphas, weights = (t.to(start.dtype) for t in quadrature(n_steps, "gausslegendre"))
    points = (start + alphas[:, None] * (end - start)).requires_grad_(True)
    (grads,) = torch.autograd.grad(net.from_units(points, layer, metric).sum(), points)
    scores = (weights[:, None] * grads).sum(0) * (end - start) / gap
    target = base_and_source(direction, 1.0, -1.0)[1]  # the source run: +1 denoising (towards clean), −1 noising
    return ToyIG(scores.detach(), abs(scores.sum().item() - target))


def scores(net: GateNet, layer: str = "input", metric: str = "probability", n_steps: int = 50) -> dict[str, Float[Tensor, "unit"]]:
    """AP and IG of every unit of ``layer`` in both directions: ``{"AP denoising": ..., "AP noising": ...,
    "IG denoising": ..., "IG noising": ...}``, each normalised by the clean−corrupted gap."""
    out = {f"AP {d}": activation_patching(net, d, layer, metric) for d in ("denoising", "noising")}
    out.update({f"IG {d}": integrated_gradients(net, d, layer, metric, n_steps).scores for d in ("denoising", "noising")})
    return out


def asymmetries(net: GateNet, layer: str = "input", metric: str = "probability", n_steps: int = 50) -> dict[str, Float[Tensor, "unit"]]:
    """AP's and IG's asymmetry per unit (:func:`ig_ap.analysis.component_asymmetry`, chapter 3's score: each unit on
    its own scale, in [−1, 1]): < 0 AND-like, > 0 OR-like.

    IG's two directions run the same path backwards, so its asymmetry is 0 up to the
    quadrature error; AP's is about −1 for the inputs of a saturated AND and +1 for an OR.
    """

    s = scores(net, layer, metric, n_steps)
    return {m: component_asymmetry(s[f"{m} denoising"][None, None], s[f"{m} noising"][None, None])[0] for m in ("AP", "IG")}


# --------------------------------------------------------------------------- an AND whose inputs sit in different layers

CROSS_LAYER_UNITS = ("u (layer 1, reads input 1)", "v (layer 2, reads input 2)")


class CrossLayerAnd(nn.Module):
    """An AND gate whose two inputs are units of *different* layers, built by hand (no training).

    The inputs ``x = (x1, x2)`` sit on a residual stream. Layer 1 writes ``u = ReLU(x1)``;
    layer 2 writes ``v = ReLU(x2)``, reading the stream but not ``u`` (the two units are
    parallel paths, as two heads of different layers that read different tokens). The
    output is ``sigmoid(gain · (u + v − 1.5))``: on only when both are on.

    :func:`cross_layer_scores` attributes ``u`` and ``v`` the way the language-model
    kernels do (:func:`ig_ap.ig.integrated_gradients`): per layer, with every other layer
    on the base run (``context="baseline"``), and, for comparison, with both layers
    interpolated together (the path along which IG credits an AND's inputs alike).
    """

    def __init__(self, gain: float = 10.0):
        super().__init__()
        if not gain > 0:
            raise ToyError(f"gain must be positive, got {gain!r}")
        self.gain = gain

    def units(self, x: Float[Tensor, "batch 2"]) -> Float[Tensor, "batch 2"]:
        """``(u, v)``: layer 1's unit and layer 2's unit."""
        return torch.relu(x)

    def from_units(self, units: Float[Tensor, "batch 2"]) -> Float[Tensor, "batch"]:
        """The output probability when the two units take ``units``."""
        return torch.sigmoid(self.gain * (units.sum(-1) - 1.5))

    def forward(self, x: Float[Tensor, "batch 2"]) -> Float[Tensor, "batch"]:
        return self.from_units(self.units(x))


def cross_layer_scores(net: CrossLayerAnd | None = None, n_steps: int = 50) -> dict[str, Float[Tensor, "unit"]]:
    """AP, per-layer IG and IG of both layers together for the two units of :class:`CrossLayerAnd`, in both directions,
    as shares of the clean−corrupted gap (clean: both inputs on; corrupted: both off).

    Keys ``"AP denoising"``, ``"AP noising"``, ``"IG per layer denoising"``, … ``"IG both layers
    noising"``. Per layer, a unit is the only component of its layer, so its IG with every
    other layer on the base run is its AP exactly (the fundamental theorem of calculus):
    per-layer IG inherits AP's dependence on the direction. Together, both units move along
    one straight line and IG credits them alike in both directions.
    """
    net = net or CrossLayerAnd()
    with torch.no_grad():
        clean, corrupted = net.units(INPUTS[3:4])[0], net.units(INPUTS[0:1])[0]
        gap = (net.from_units(clean[None]) - net.from_units(corrupted[None])).item()
    alphas, weights = (t.to(clean.dtype) for t in quadrature(n_steps, "gausslegendre"))
    out = {}
    for direction in ("denoising", "noising"):
        base, source = base_and_source(direction, clean, corrupted)
        patched = base.repeat(2, 1)
        patched[[0, 1], [0, 1]] = source
        with torch.no_grad():
            out[f"AP {direction}"] = (net.from_units(patched) - net.from_units(base[None])) / gap
        for name, moving in (("per layer", torch.eye(2)), ("both layers", torch.ones(1, 2))):
            scores = torch.zeros(2)
            for mask in moving:  # the units that move together; the others stay on the base run
                points = (base + alphas[:, None] * mask * (source - base)).requires_grad_(True)
                (grads,) = torch.autograd.grad(net.from_units(points).sum(), points)
                scores = scores + ((weights[:, None] * grads).sum(0) * mask * (source - base)).detach()
            out[f"IG {name} {direction}"] = scores / gap
    return out
