"""Tasks from files: each layout reads into the dataset the built-in generator gives; every bad row is one line."""

import csv
import json
import warnings

import pytest
import torch

from ig_ap.results import compute_key
from ig_ap.task_files import FileTask, answer_logit_diff, load_task_file
from ig_ap.tasks import TaskError, logit_diff, make_dataset


@pytest.fixture(scope="module")
def ioi(tiny_gpt2):
    return make_dataset("ioi", tiny_gpt2, n=6, seed=0)


def _rows(data):
    return [(c, k, a[0], a[1]) for c, k, a in zip(data.clean_prompts, data.corrupted_prompts, data.answer_strings)]


def _write(path, layout, rows, tokenizer=None):
    if layout == "ours.csv":
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["clean", "corrupted", "answer", "wrong"])
            w.writerows(rows)
    elif layout == "ours.jsonl":
        path.write_text("".join(json.dumps({"clean": c, "corrupted": k, "answer": a, "wrong": w}) + "\n" for c, k, a, w in rows))
    elif layout == "auto-circuit.json":
        path.write_text(json.dumps({"prompts": [{"clean": c, "corrupt": k, "answers": [a], "wrong_answers": [w]} for c, k, a, w in rows]}))
    elif layout == "eap-ig.csv":  # EAP-IG's IOI layout: an unnamed index column, token ids
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["", "clean", "corrupted", "corrupted_hard", "correct_idx", "incorrect_idx"])
            for i, (c, k, a, wrong) in enumerate(rows):
                ids = [tokenizer(x, add_special_tokens=False)["input_ids"][0] for x in (a, wrong)]
                w.writerow([i, c, k, k, *ids])
    elif layout == "eap-ig-gender.csv":  # EAP-IG's Gender-Bias layout, as its data/gender-bias/gpt2.csv
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["clean", "corrupted", "clean_answer_idx", "corrupted_answer_idx", "label"])
            for c, k, a, wrong in rows:
                ids = [tokenizer(x, add_special_tokens=False)["input_ids"][0] for x in (a, wrong)]
                w.writerow([c, k, *ids, 0])
    else:  # EAP-IG's Capital-Country layout, as its data/fact-retrieval-comma/gpt2.csv
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["clean", "capital", "country", "country_idx", "corrupted", "corrupted_capital", "corrupted_country",
                        "corrupted_country_idx"])
            for c, k, a, wrong in rows:
                ids = [tokenizer(x, add_special_tokens=False)["input_ids"][0] for x in (a, wrong)]
                w.writerow([c, "x", a.strip(), ids[0], k, "y", wrong.strip(), ids[1]])
    return path


@pytest.mark.parametrize("layout", ["ours.csv", "ours.jsonl", "auto-circuit.json", "eap-ig.csv", "eap-ig-gender.csv", "eap-ig-capital.csv"])
def test_each_layout_reads_the_built_in_prompts_back(tmp_path, tiny_gpt2, ioi, layout):
    path = _write(tmp_path / f"pairs.{layout.split('.')[-1]}", layout, _rows(ioi), tiny_gpt2.tokenizer)
    data = load_task_file(path, tiny_gpt2)
    assert data.clean_ids == ioi.clean_ids and data.corrupted_ids == ioi.corrupted_ids
    assert torch.equal(data.answers, ioi.answers)
    batch, built_in = data.batch(), ioi.batch()
    logits = torch.randn(len(batch), tiny_gpt2.cfg.d_vocab)
    torch.testing.assert_close(batch.metric(logits, batch), logit_diff(logits, built_in))  # one answer each: the same metric
    assert isinstance(data.task, FileTask) and data.task.title == "pairs"
    assert data.extra["layout"] == {"ours.csv": "ours", "ours.jsonl": "ours", "auto-circuit.json": "auto-circuit", "eap-ig.csv": "EAP-IG",
                                    "eap-ig-gender.csv": "EAP-IG Gender-Bias", "eap-ig-capital.csv": "EAP-IG Capital-Country"}[layout]


def test_several_answers_are_averaged_and_prob_diff_is_a_choice(tmp_path, tiny_gpt2):
    path = _write(tmp_path / "two.csv", "ours.csv", [("When Mary and John went out, John gave it to",
                                                      "When Mary and John went out, Anne gave it to", " Mary| Anne", " John")])
    data = load_task_file(path, tiny_gpt2)
    tok = tiny_gpt2.tokenizer
    ids = [tok(x, add_special_tokens=False)["input_ids"][0] for x in (" Mary", " Anne", " John")]
    assert data.answers.tolist() == [[ids[0], ids[1], ids[2], -1]]
    logits = torch.randn(1, tiny_gpt2.cfg.d_vocab)
    expected = (logits[0, ids[0]] + logits[0, ids[1]]) / 2 - logits[0, ids[2]]
    assert answer_logit_diff(logits, data.batch()).item() == pytest.approx(expected.item(), abs=1e-5)
    probs = load_task_file(path, tiny_gpt2, metric="prob_diff")
    p = logits.softmax(-1)[0]
    assert probs.batch().metric(logits, probs.batch()).item() == pytest.approx((p[ids[0]] + p[ids[1]] - p[ids[2]]).item(), abs=1e-6)


BAD = {
    "lengths": ("When Mary and John went out, John gave it to", "When Mary and John went out, Christopher Robinson gave it to", " Mary", " John", "tokens and the corrupted one"),
    "answer": ("When Mary and John went out, John gave it to", "When Mary and John went out, Anne gave it to", " Maryanne-Louise", " John", "is 5 tokens"),
    "empty": ("", "When Mary and John went out, Anne gave it to", " Mary", " John", "clean prompt is empty"),
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_every_bad_row_is_one_line_naming_the_file_row_and_fix(tmp_path, tiny_gpt2, ioi, kind):
    good = _rows(ioi)[:3]
    path = _write(tmp_path / "pairs.csv", "ours.csv", good[:2] + [BAD[kind][:4]] + good[2:])
    with pytest.raises(TaskError, match=BAD[kind][4]) as error:
        load_task_file(path, tiny_gpt2)
    message = str(error.value)
    assert "\n" not in message and "pairs.csv, row 3" in message and "on_bad_rows='drop'" in message
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = load_task_file(path, tiny_gpt2, on_bad_rows="drop")
    assert len(data) == 3 and data.extra["dropped"][0]["row"] == 3 and "dropped 1 of 4 rows" in str(caught[0].message)


def test_duplicates_unknown_columns_and_foreign_token_ids_are_refused(tmp_path, tiny_gpt2, ioi):
    rows = _rows(ioi)[:2]
    with pytest.raises(TaskError, match="row 3: the same pair and answers as row 1"):
        load_task_file(_write(tmp_path / "dup.csv", "ours.csv", rows + rows[:1]), tiny_gpt2)
    odd = tmp_path / "odd.csv"
    odd.write_text("clean,corrupted,answer,wrong,weight\na,b,c,d,1\n")
    with pytest.raises(TaskError, match="unknown column.*weight"):
        load_task_file(odd, tiny_gpt2)
    eap = _write(tmp_path / "eap.csv", "eap-ig.csv", rows, tiny_gpt2.tokenizer)
    text = eap.read_text().splitlines()
    text[1] = ",".join(text[1].split(",")[:-2] + ["128000", text[1].split(",")[-1]])  # a Llama-3 id: not in this vocabulary
    eap.write_text("\n".join(text) + "\n")
    with pytest.raises(TaskError, match="row 1: token id 128000 is outside the vocabulary"):
        load_task_file(eap, tiny_gpt2)
    same = _write(tmp_path / "same.csv", "ours.csv", [(*rows[0][:2], rows[0][2], rows[0][2] + "| " + rows[0][3].strip())])
    with pytest.raises(TaskError, match="row 1: .* is both an answer and a wrong answer"):
        load_task_file(same, tiny_gpt2)


def test_a_task_file_is_keyed_by_its_content_not_its_path(tmp_path, tiny_gpt2, ioi):
    rows = _rows(ioi)
    first = load_task_file(_write(tmp_path / "a.csv", "ours.csv", rows), tiny_gpt2)
    (tmp_path / "elsewhere").mkdir()
    moved = load_task_file(_write(tmp_path / "elsewhere" / "b.csv", "ours.csv", rows), tiny_gpt2)
    edited = load_task_file(_write(tmp_path / "c.csv", "ours.csv", rows[:-1]), tiny_gpt2)
    key = lambda d: compute_key(tiny_gpt2, d, "ap", components=("heads",))  # noqa: E731
    assert key(first) == key(moved) and key(first) != key(edited)
    sample = make_dataset(tmp_path / "a.csv", tiny_gpt2, n=3, seed=1)  # make_dataset takes the path too
    assert len(sample) == 3 and key(sample) != key(first)


def test_a_kernel_runs_on_a_task_file(tmp_path, tiny_gpt2, ioi):
    from ig_ap.patching import activation_patching

    data = load_task_file(_write(tmp_path / "pairs.jsonl", "ours.jsonl", _rows(ioi)), tiny_gpt2)
    ours = activation_patching(tiny_gpt2, data.batch(), components="heads", progress=False)
    theirs = activation_patching(tiny_gpt2, ioi.batch(), components="heads", progress=False)
    torch.testing.assert_close(ours.heads, theirs.heads)


def test_node_scores_in_eap_ig_names_are_the_results_means(tmp_path, tiny_gpt2, ioi):
    """`python -m ig_ap.export scores.json`: each result's mean score per head under EAP-IG's node names, per neuron
    under its MLP's name; an EAP-IG reader finds a0.h0 ... and m0 ..."""
    from ig_ap import export, results

    ap = results.compute(tiny_gpt2, ioi, "ap", directory=tmp_path, components=("heads",), progress=False)
    ig = results.compute(tiny_gpt2, ioi, "ig", directory=tmp_path, n_steps=4, progress=False)
    assert export.main(["--results", str(tmp_path), str(tmp_path / "scores.json")]) == 0
    written = json.loads((tmp_path / "scores.json").read_text())["results"]
    by_method = {r["method"]: r for r in written}
    assert set(by_method) == {"ap", "ig"} and by_method["ig"]["format"] == export.NODE_SCORES_FORMAT
    info = tiny_gpt2.cfg
    assert len(by_method["ap"]["nodes"]) == info.n_layers * info.n_heads and by_method["ap"]["neurons"] == {}
    assert by_method["ap"]["nodes"]["a1.h2"] == pytest.approx(ap.heads[:, 1, 2].mean().item(), abs=1e-6)
    assert by_method["ig"]["neurons"]["m0"][5] == pytest.approx(ig.neurons[:, 0, 5].mean().item(), abs=1e-6)
    assert by_method["ig"]["clean_metric"] == pytest.approx(ig.clean_metric.mean().item(), abs=1e-6)


def test_eap_igs_greater_than_layout_reads_into_the_built_in_task(tmp_path, tiny_gpt2):
    """EAP-IG's greater_than_data.csv layout (clean, corrupted, label): the built-in Greater-Than prompts written that way
    read back with the built-in answers, candidates and metric for this tokenizer."""
    import re

    built_in = make_dataset("greater_than", tiny_gpt2, n=6, seed=0)
    path = tmp_path / "greater_than_data.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["clean", "corrupted", "label"])
        for clean, corrupted in zip(built_in.clean_prompts, built_in.corrupted_prompts):
            w.writerow([clean, corrupted, int(re.search(r"year \d\d(\d\d) to", clean).group(1))])
    data = load_task_file(path, tiny_gpt2)
    assert data.clean_ids == built_in.clean_ids and torch.equal(data.answers, built_in.answers)
    assert torch.equal(data.candidates, built_in.candidates)
    logits = torch.randn(len(data), tiny_gpt2.cfg.d_vocab)
    torch.testing.assert_close(data.batch().metric(logits, data.batch()), built_in.batch().metric(logits, built_in.batch()))
    other = tmp_path / "gpt2.csv"  # eap-ig-faithfulness's data/greater-than layout: the same label, named correct_idx
    other.write_text(path.read_text().replace("clean,corrupted,label", "clean,corrupted,correct_idx", 1))
    assert torch.equal(load_task_file(other, tiny_gpt2).answers, built_in.answers)
    path.write_text("clean,corrupted,label\nThe war lasted from the year 1732 to the year 17,The war lasted from the year 1701 to the year 17,1732\n")
    with pytest.raises(TaskError, match="row 1: label '1732' is not a year's last two digits"):
        load_task_file(path, tiny_gpt2)
