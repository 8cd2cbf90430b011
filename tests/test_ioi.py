"""The IOI reading of head measurements: head sets from data, backups by response, mover roles, S-inhibition
senders, negative edges and copy suppression, checked on hand-made measurements and a model with a planted backup head."""

import pytest
import torch

from ig_ap import heads, ioi
from ig_ap.analysis import Patched
from ig_ap.attribution import AttributionError
from ig_ap.models import load_model
from ig_ap.tasks import Batch, Task, make_dataset


def test_head_sets_from_data_are_signed_and_published_ones_on_gpt2_small(tiny_gpt2):
    batch = make_dataset("ioi", tiny_gpt2, n=4, seed=0).batch()
    sets, rule = ioi.head_sets(tiny_gpt2, batch)
    assert "found from data" in rule and len(sets["name movers"]) == 3
    assert not set(sets["name movers"]) & set(sets["negative name movers"])
    assert not set(sets["backup name movers"]) & set(sets["name movers"])
    assert not ioi.is_gpt2_small(tiny_gpt2)


def test_head_sets_can_be_given_as_parameters(tiny_gpt2):
    batch = make_dataset("ioi", tiny_gpt2, n=2, seed=0).batch()
    assert heads.parse_heads("L1H2, 0.3  L1H0") == [(1, 2), (0, 3), (1, 0)]
    sets, rule = ioi.head_sets(tiny_gpt2, batch, name_movers="L1H2 L1H3", negative_name_movers="auto")
    assert sets["name movers"] == [(1, 2), (1, 3)] and "as given by the parameters" in rule
    assert not {(1, 2), (1, 3)} & (set(sets["negative name movers"]) | set(sets["backup name movers"]))
    for bad, match in [(dict(name_movers="9-6"), "cannot read head"), (dict(name_movers="L9H6"), "does not exist"),
                       (dict(movers="L1H2"), "unknown head set")]:
        with pytest.raises(AttributionError, match=match):
            ioi.head_sets(tiny_gpt2, batch, **bad)


# ---- a tiny model with a planted backup head

PLANTED_NAMES = list(range(1000, 1006))  # token ids standing for names
PLANTED_QUERY = 2000  # the token after the name


@pytest.fixture(scope="module")
def planted():
    """tiny-gpt2 rewired by hand (MLPs, biases and positions off) so that the answer to "name, query" is the name:

    - L0H0, the name mover, and L0H1, its twin: attention spread evenly, they copy the name's
      identity (dims 0–11 of its embedding) into the last position, which the tied unembedding reads;
    - L1H0, the backup: its key at the name reads the name's identity and a name flag (dim 12),
      its query at the last position reads minus what the layer-0 heads wrote (dims 0–11) and a
      constant from the query token. When both layer-0 heads copy the name, the two cancel and
      it looks at the query token instead; when L0H0 is ablated, it attends to the name and copies it;
    - L1H1: copies the name with attention spread evenly, whatever layer 0 did (a head with a
      direct effect that does not respond).

    Prompts: every ordered pair of distinct names (clean "a, query", corrupted "b, query": the answer flips).
    """
    model = load_model("tiny-gpt2", device="cpu", seed=0)
    hf = model.original_model
    generator = torch.Generator().manual_seed(0)
    d, dh = model.cfg.d_model, model.cfg.d_head
    identity = torch.zeros(d, dh)
    identity[torch.arange(12), torch.arange(12)] = 1.0  # residual dims 0–11 -> head dims 0–11
    with torch.no_grad():
        for p in hf.parameters():
            p.zero_()
        for norm in [*(b.ln_1 for b in hf.transformer.h), *(b.ln_2 for b in hf.transformer.h), hf.transformer.ln_f]:
            norm.weight.fill_(1.0)
        wte = hf.transformer.wte.weight  # tied to the unembedding
        names = torch.nn.functional.normalize(torch.randn(len(PLANTED_NAMES), 12, generator=generator), dim=1)
        for i, token in enumerate(PLANTED_NAMES):
            wte[token, :12], wte[token, 12] = names[i], 1.0
        constant = torch.nn.functional.normalize(torch.randn(16, generator=generator), dim=0)
        wte[PLANTED_QUERY, 20:36] = 20.0 * constant

        def head(layer, h, q=None, k=None, v=None, o=None):
            attn = hf.transformer.h[layer].attn
            for offset, weight in ((0, q), (d, k), (2 * d, v)):
                if weight is not None:
                    attn.c_attn.weight[:, offset + h * dh: offset + (h + 1) * dh] = weight
            attn.c_proj.weight[h * dh:(h + 1) * dh] = o

        head(0, 0, v=identity, o=0.354 * identity.T)
        head(0, 1, v=identity, o=0.354 * identity.T)
        key = identity.clone()
        key[12, 12] = 1.0
        query = -12.0 * identity
        query[20:36, 12] = 4.1 * constant
        head(1, 0, q=query, k=key, v=identity, o=0.3 * identity.T)
        head(1, 1, v=identity, o=0.1 * identity.T)
    pairs = [(a, b) for a in PLANTED_NAMES for b in PLANTED_NAMES if a != b]
    batch = Batch(Task.IOI, torch.tensor([[a, PLANTED_QUERY] for a, _ in pairs]), torch.tensor([[b, PLANTED_QUERY] for _, b in pairs]),
                  torch.tensor(pairs), torch.ones(len(pairs), dtype=torch.long))
    return model, batch


def test_backup_detection_finds_the_planted_backup_head_by_its_response(planted):
    model, batch = planted
    with torch.no_grad():
        clean = batch.score(model(batch.clean))
    assert (clean > 0).all()  # the model does the task
    response = ioi.backup_response(model, batch, [(0, 0)])
    assert response.heads() == [(1, 0)]
    assert response.rise[:, 0, 0].mean() < 0 and response.lost.mean() > 0  # the ablated name mover lost its direct effect
    assert response.rise[:, 1, 0].mean() > response.threshold > 0
    assert response.interval((1, 0)).low > 0
    dla = heads.direct_logit_attribution(model, batch).heads.mean(0)
    assert dla[1, 1] > 0 and (1, 1) not in response.heads()  # a direct effect that does not respond is no backup
    assert ioi.find_head_sets(model, batch, n_movers=1, n_negative=1)["backup name movers"] == [(1, 0)]
    assert "mean-ablated" in response.rule and "5%" in response.rule


def test_copy_suppression_measures_both_runs_and_refuses_an_upstream_receiver(tiny_gpt2):
    batch = make_dataset("ioi", tiny_gpt2, n=3, seed=0).batch()
    cs = ioi.copy_suppression(tiny_gpt2, batch, (0, 1), (1, 2))
    assert cs.receiver_logit.shape == (3, 2) and cs.receiver_attention.shape == (3, 2)
    assert not torch.allclose(cs.receiver_logit[:, 0], cs.receiver_logit[:, 1])  # the edge changes the receiver
    with pytest.raises(AttributionError, match="is not after"):
        ioi.copy_suppression(tiny_gpt2, batch, (1, 0), (1, 2))


def test_top_senders_need_an_interval_above_zero():
    clean, corrupted = torch.full((6,), 2.0), torch.zeros(6)
    metric = torch.stack([torch.tensor([0.9, 1.1, 1.0, 0.8, 1.2, 1.0]),   # clearly positive
                          torch.tensor([-1.0, 1.2, -1.1, 1.0, -0.9, 1.0]),  # positive mean, interval across 0
                          torch.full((6,), -0.5)])[None, :, None]  # [input, sender, receiver, prompt]
    paths = ioi.Patched(metric, clean, corrupted)
    assert ioi.top_senders(paths, [(0, 0), (0, 1), (0, 2)], 3) == [(0, 0)]


def test_copy_suppression_verdict_follows_the_three_predictions():
    n = 6
    up = torch.linspace(0.8, 1.2, n)
    both = lambda before, after: torch.stack([before, after], 1)  # noqa: E731  [prompt, (corrupted run, with the edge)]
    holds = ioi.CopySuppression((0, 0), (1, 0), torch.stack([up, 0 * up], 1), both(-0.2 * up, -up), both(0.1 * up, 0.6 * up))
    assert holds.verdict().startswith("consistent with copy suppression") and len(holds.checks()) == 8
    lowers_s = ioi.CopySuppression((0, 0), (1, 0), torch.stack([0 * up, -up], 1), both(-0.2 * up, -up), both(0.1 * up, 0.6 * up))
    text = lowers_s.verdict()
    assert "do not establish that the sender raises the IO logit" in text and "does not fit this sender" in text
    assert "the receiver attends more to IO" in text  # established, and said so


def test_mover_roles_read_attention_and_the_two_logits():
    n = 6
    ramp = torch.linspace(0.9, 1.1, n)
    attention = torch.stack([torch.stack([0.7 * ramp, 0.1 * ramp], -1),   # looks at IO
                             torch.stack([0.1 * ramp, 0.7 * ramp], -1),   # looks at S
                             torch.stack([0.1 * ramp, 0.7 * ramp], -1)], 1)  # looks at S, but raises S
    writes = torch.stack([torch.stack([ramp, 0 * ramp], -1), torch.stack([0 * ramp, -ramp], -1),
                          torch.stack([0 * ramp, ramp], -1)], 1)
    assert ioi.mover_roles(attention, writes) == ["copies IO", "pushes S down", "neither pattern is established"]


def test_negative_edges_and_ranked_senders_read_the_path_shares():
    clean, corrupted = torch.full((4,), 2.0), torch.zeros(4)
    share = torch.tensor([[0.2, -0.6], [-0.1, 0.4], [0.0, -0.3]])  # [sender, receiver] shares of the gap
    metric = (share[None, :, :, None] * 2.0).expand(1, 3, 2, 4)  # [input, sender, receiver, prompt]
    paths = Patched(metric, clean, corrupted)
    senders, receivers = [(0, 0), (0, 1), (0, 2)], [(1, 0), (1, 1)]
    assert ioi.negative_edges(paths, senders, receivers) == [((0, 0), (1, 1)), ((0, 2), (1, 1)), ((0, 1), (1, 0))]
    assert ioi.ranked_senders(paths, senders, receiver=1) == [(0, 1), (0, 2), (0, 0)]
    assert ioi.ranked_senders(paths, senders, receiver=0)[0] == (0, 0)
    assert ioi.strongest_edge(paths) == (0, 0, 1)  # |−0.6| is the largest share
    three_inputs = Patched(torch.cat([metric, metric * 0.5, -metric * 1.5]), clean, corrupted)  # q, k, v
    assert ioi.strongest_edge(three_inputs) == (2, 0, 1)


def test_head_mask_marks_the_heads_and_refuses_one_out_of_range(tiny_gpt2):
    from ig_ap.heads import head_mask

    mask = head_mask(tiny_gpt2, [(0, 1), (1, 3)])
    assert mask.dtype == torch.bool and mask.nonzero().tolist() == [[0, 1], [1, 3]]
    with pytest.raises(AttributionError, match="L9H0|layer"):
        head_mask(tiny_gpt2, [(9, 0)])
