"""The four tasks: datasets adapt to the tokenizer, metrics read each prompt's own last token."""

import re

import pytest
import torch

from ig_ap.models import ModelInfo
from ig_ap.tasks import (
    CAPITALS,
    Batch,
    Task,
    TaskError,
    evaluate,
    final_logits,
    logit_diff,
    make_dataset,
    normalized,
    prob_diff,
)

LOGIT_TASKS = [Task.IOI, Task.GENDER_BIAS, Task.CAPITAL_COUNTRY]


# ---- stand-in tokenizers, to check that the tasks adapt and fail clearly


class WordTokenizer:
    """GPT-2-like: words with their leading space, and numbers in two-digit chunks (" 1732" → " 17", "32")."""

    pattern = re.compile(r" ?\d\d| ?\d| ?[A-Za-z']+|\s|.")
    bos_token_id, eos_token_id, pad_token_id = 0, 0, None

    def __init__(self):
        self.vocab = {"<bos>": 0}

    def __call__(self, text, add_special_tokens=False):
        ids = [self.vocab.setdefault(piece, len(self.vocab)) for piece in self.pattern.findall(text)]
        return {"input_ids": ids}

    def __len__(self):
        return 100_000


class CharTokenizer(WordTokenizer):
    """Every character is a token: no name is a single token."""

    pattern = re.compile(r".", re.S)


def fake_info(tokenizer, prepend_bos=False):
    return ModelInfo(
        name="fake", model_id="fake", hf_name="fake", prepend_bos=prepend_bos, tokenizer=tokenizer,
        n_layers=1, n_heads=1, n_kv_heads=1, d_model=8, d_head=8, d_mlp=8, d_vocab=100_000,
        device="cpu", dtype=torch.float32,
    )


# ---- datasets


@pytest.mark.parametrize("task", list(Task))
def test_pairs_have_equal_lengths_and_single_token_answers(smollm2, task):
    data = make_dataset(task, smollm2, n=40, seed=1)
    assert len(data) == 40 and len(set(data.clean_prompts)) == 40
    tokenizer = smollm2.ig_ap_info.tokenizer
    for clean, corrupted, answers, strings in zip(data.clean_ids, data.corrupted_ids, data.answers, data.answer_strings):
        assert len(clean) == len(corrupted) and clean != corrupted
        if task in LOGIT_TASKS:
            assert answers[0] != answers[1]
            if task is not Task.CAPITAL_COUNTRY:  # the country's first token is the answer
                assert [tokenizer(s, add_special_tokens=False)["input_ids"] for s in strings] == [[int(a)] for a in answers]
    if task is Task.GREATER_THAN:
        assert data.variant == "next-digit"  # SmolLM2 writes digits one per token
        assert [tokenizer.decode([int(c)]) for c in data.candidates] == [str(d) for d in range(10)]


def test_same_seed_same_dataset_other_seed_other_dataset(tiny_gpt2):
    for task in Task:
        a, b = make_dataset(task, tiny_gpt2, n=20, seed=5), make_dataset(task, tiny_gpt2, n=20, seed=5)
        c = make_dataset(task, tiny_gpt2, n=20, seed=6)
        assert a.clean_prompts == b.clean_prompts and a.corrupted_prompts == b.corrupted_prompts
        assert torch.equal(a.answers, b.answers)
        assert a.clean_prompts != c.clean_prompts


def test_ioi_corruptions(smollm2):
    abc = make_dataset("ioi", smollm2, n=30, seed=0)
    abb = make_dataset("ioi", smollm2, n=30, seed=0, corruption="abb")
    for data in (abc, abb):
        for clean, corrupted, (io, s) in zip(data.clean_prompts, data.corrupted_prompts, data.answer_strings):
            assert clean.count(s) == 2 and clean.count(io) == 1  # the subject is repeated: ABB
            if data is abc:  # only the second subject changes
                assert corrupted.startswith(clean[: clean.rindex(s)]) and corrupted.count(s) == 1
            else:  # both names replaced, still one of them repeated
                assert s not in corrupted and io not in corrupted
    assert {p.split(" and ")[0].split()[-1] == a[0].strip() for p, a in zip(abc.clean_prompts, abc.answer_strings)} == {True, False}, "ABBA and BABA forms both appear"


def test_ioi_name_swap_flips_the_answer_and_keeps_lengths_equal(smollm2):
    data = make_dataset("ioi", smollm2, n=30, seed=0, corruption="swap")
    assert data.variant == "swap"
    count = lambda text, name: len(re.findall(re.escape(name) + r"\b", text))  # noqa: E731
    for clean, corrupted, ids, corrupted_ids, (io, s) in zip(data.clean_prompts, data.corrupted_prompts, data.clean_ids,
                                                            data.corrupted_ids, data.answer_strings):
        assert len(ids) == len(corrupted_ids)
        at = clean.rindex(s)  # the second mention of the subject becomes the indirect object's name
        assert corrupted == clean[:at] + io + clean[at + len(s):]
        assert count(corrupted, io) == 2 and count(corrupted, s) == 1  # now the old subject is the one named once
    clean_metric, corrupted_metric = evaluate(smollm2, data.head(8))
    assert clean_metric.mean() > 0 > corrupted_metric.mean()  # the model's answer flips with the names
    with pytest.raises(TaskError, match="unknown IOI corruption 'xyz'; choose one of 'abc', 'abb', 'swap'"):
        make_dataset("ioi", smollm2, n=2, corruption="xyz")


def test_gender_bias_is_balanced(smollm2):
    data = make_dataset("gender_bias", smollm2, n=40, seed=0)
    assert sum(s[0] == " she" for s in data.answer_strings) == 20
    for clean, corrupted, strings in zip(data.clean_prompts, data.corrupted_prompts, data.answer_strings):
        assert corrupted.startswith("The man " if strings[0] == " she" else "The woman ")


def test_capital_country_list_and_corruption(smollm2):
    assert len(CAPITALS) >= 150 and len({c for c, _ in CAPITALS}) == len(CAPITALS)
    data = make_dataset("capital_country", smollm2, n=60, seed=0)
    for clean, corrupted, (right, wrong) in zip(data.clean_ids, data.corrupted_ids, data.answers):
        assert len(clean) == len(corrupted) and right != wrong


def test_greater_than_adapts_to_a_two_digit_tokenizer():
    info = fake_info(WordTokenizer(), prepend_bos=True)
    data = make_dataset("greater_than", info, n=10, seed=0)
    assert data.variant == "two-digit" and len(data.candidates) == 100
    assert all(ids[0] == 0 for ids in data.clean_ids)  # BOS prepended when the model wants it
    assert all(2 <= int(a[0]) <= 98 and int(a[1]) == 0 for a in data.answers)


def test_bad_input_gets_one_clear_line(tiny_gpt2):
    cases = [
        (dict(task="sentiment"), "unknown task 'sentiment'; choose one of ioi, greater_than"),
        (dict(n=0), "n must be a positive int"),
        (dict(n="5"), "n must be a positive int"),
        (dict(task="capital_country", n=10_000), r"without repeats \(\d+\); ask for at most"),
        (dict(task="ioi", corruption="xyz"), "unknown IOI corruption"),
        (dict(task="gender_bias", corruption="abc"), "takes no options"),
    ]
    for kwargs, message in cases:
        args = {"task": "ioi", "n": 5, **kwargs}
        with pytest.raises(TaskError, match=message) as err:
            make_dataset(args.pop("task"), tiny_gpt2, **args)
        assert "\n" not in str(err.value)


def test_tokenizer_without_single_token_names_is_a_clear_error():
    with pytest.raises(TaskError, match="only 0 single-token names"):
        make_dataset("ioi", fake_info(CharTokenizer()), n=5)
    with pytest.raises(TaskError, match="' he' and ' she' are not single tokens"):
        make_dataset("gender_bias", fake_info(CharTokenizer()), n=5)


# ---- metrics


def test_metrics_on_hand_built_logits():
    logits = torch.zeros(2, 4, 10)
    logits[0, 1, 3], logits[0, 1, 4] = 5.0, 2.0  # prompt 0 ends at position 1
    logits[1, 3, 3], logits[1, 3, 4] = 1.0, 4.0  # prompt 1 ends at position 3
    logits[0, 3, 4] = 100.0  # padding of prompt 0: must not be read
    batch = Batch(Task.IOI, torch.zeros(2, 4, dtype=torch.long), torch.zeros(2, 4, dtype=torch.long),
                  torch.tensor([[3, 4], [3, 4]]), torch.tensor([1, 3]))
    assert logit_diff(final_logits(logits, batch.last), batch).tolist() == [3.0, -3.0]
    assert batch.score(logits).tolist() == [3.0, -3.0]
    assert torch.equal(final_logits(logits, batch.last)[0], logits[0, 1])

    # Greater-Than, two-digit: all mass on year 50 with threshold 32 → +1; on year 10 → −1.
    years = torch.arange(100, 200)
    logits = torch.full((3, 2, 300), -1e4)
    logits[0, 1, years[50]] = logits[1, 1, years[10]] = 0.0
    logits[2, 1, years[32]] = 0.0  # equal year counts as "not greater"
    gt = Batch(Task.GREATER_THAN, torch.zeros(3, 2, dtype=torch.long), torch.zeros(3, 2, dtype=torch.long),
               torch.tensor([[32, 0]] * 3), torch.tensor([1, 1, 1]), candidates=years)
    torch.testing.assert_close(gt.score(logits, prob_diff), torch.tensor([1.0, -1.0, -1.0]))
    # Next digit (strict): the equal digit is left out of both sides.
    digits = torch.arange(10)
    logits = torch.full((1, 1, 10), -1e4)
    logits[0, 0, 3] = 0.0
    nd = Batch(Task.GREATER_THAN, torch.zeros(1, 1, dtype=torch.long), torch.zeros(1, 1, dtype=torch.long),
               torch.tensor([[3, 1]]), torch.tensor([0]), candidates=digits)
    torch.testing.assert_close(nd.score(logits), torch.tensor([0.0]))

    values, clean, corrupted = torch.tensor([1.0, 2.0]), torch.tensor([3.0, 2.0]), torch.tensor([1.0, 0.0])
    assert normalized(values, clean, corrupted).tolist() == [0.0, 1.0]


@pytest.mark.parametrize("task", list(Task))
def test_batched_metric_equals_one_prompt_at_a_time(tiny_llama, task):
    data = make_dataset(task, tiny_llama, n=12, seed=2)
    batch = data.batch()
    lengths = batch.last + 1
    if task in (Task.IOI, Task.CAPITAL_COUNTRY):
        assert len(set(lengths.tolist())) > 1, "the check needs prompts of different lengths"
    with torch.no_grad():
        logits = tiny_llama(batch.clean, return_type="logits")
        batched = batch.score(logits)
        single = torch.stack([
            one.score(tiny_llama(one.clean, return_type="logits"))[0]
            for one in (data.batch([i]) for i in range(len(data)))
        ])
    torch.testing.assert_close(batched, single, rtol=1e-4, atol=1e-5)
    if len(set(lengths.tolist())) > 1:
        # The original notebooks' bug, reading position -1 of the padded batch, gives other numbers.
        naive = Batch(task, batch.clean, batch.corrupted, batch.answers,
                      torch.full_like(batch.last, batch.clean.shape[1] - 1), batch.candidates).score(logits)
        assert not torch.allclose(naive, single, rtol=1e-4, atol=1e-5)


def test_batched_metric_equals_one_at_a_time_on_the_embedded_model(smollm2):
    data = make_dataset("ioi", smollm2, n=6, seed=3)
    batch = data.batch()
    assert len(set(batch.last.tolist())) > 1
    with torch.no_grad():
        batched = batch.score(smollm2(batch.clean, return_type="logits"))
        single = torch.stack([data.batch([i]).score(smollm2(data.batch([i]).clean, return_type="logits"))[0]
                              for i in range(len(data))])
    torch.testing.assert_close(batched, single, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("task", list(Task))
def test_embedded_model_does_each_task(smollm2, task):
    """A fact about the model: on average the clean metric is above the corrupted one."""
    data = make_dataset(task, smollm2, n=16, seed=0)
    clean, corrupted = evaluate(smollm2, data, batch_size=16)
    assert clean.mean() > corrupted.mean()
    assert (clean > 0).float().mean() > 0.5


def test_batches_cover_the_dataset_and_share_the_prefix(tiny_gpt2):
    data = make_dataset("ioi", tiny_gpt2, n=10, seed=0)
    batches = list(data.batches(4))
    assert [len(b) for b in batches] == [4, 4, 2]
    assert torch.equal(torch.cat([b.answers for b in batches]), data.answers)
    first = batches[0].first_difference()
    assert torch.equal(batches[0].clean[:, :first], batches[0].corrupted[:, :first])
    assert (batches[0].clean[:, first] != batches[0].corrupted[:, first]).any()
    with pytest.raises(TaskError, match="batch_size"):
        next(data.batches(0))


def test_summary_and_cli(tiny_gpt2, capsys):
    from ig_ap.tasks import format_summary, main, summary

    table = summary(tiny_gpt2, n=8, seed=0)
    assert list(table.index) == ["IOI", "Greater-Than", "Gender-Bias", "Capital-Country"]
    assert (table["prompts"] == 8).all() and table["clean right"].between(0, 1).all()
    assert format_summary(table)["clean (mean ± sd)"].str.contains("±").all()
    assert main(["--model", "tiny-gpt2", "--n", "4", "--tasks", "ioi"]) == 0
    assert "IOI" in capsys.readouterr().out
    assert main(["--model", "tiny-gpt2", "--tasks", "sentiment"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown task 'sentiment'") and "\n" not in err


def test_the_first_prompts_of_a_dataset_are_a_dataset_with_their_own_key(tiny_gpt2):
    data = make_dataset("capital_country", tiny_gpt2, n=6, seed=0)
    first = data.head(3)
    assert first.clean_prompts == data.clean_prompts[:3] and torch.equal(first.batch().answers, data.batch().answers[:3])
    assert first.variant != data.variant and first.variant != make_dataset("capital_country", tiny_gpt2, n=3, seed=0).variant
    assert data.head(6) is data
    with pytest.raises(TaskError, match="k must be an int"):
        data.head(7)
