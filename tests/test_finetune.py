"""Fine-tuning the bi-encoder and the next-category GRU, the evaluation gate and its report."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from offline.finetune import FinetuneConfig, bootstrap_ci, evaluate_retrieval, finetune_bi_encoder
from offline.sequence_model import Example, FrequencyBaseline, SequenceConfig, SequenceModel, accuracy_at
from offline.training import better

PAIRS = [("evening | searched massage | recently spa", "spa: Zen Spa deep tissue massage"),
         ("morning | searched espresso | recently coffee", "coffee: Saffron Brew espresso deal"),
         ("night | searched jazz | recently culture", "culture: Blue Note live jazz"),
         ("midday | searched ramen | recently food", "food: Ramen House tonkotsu bowl")]


def test_finetune_learns_the_pairs_and_saves_a_loadable_model(tmp_path: Path) -> None:
    from online.embeddings import LoadedModel, load_sentence_transformer

    stats = finetune_bi_encoder(PAIRS * 2, tmp_path / "m", FinetuneConfig(steps=4, batch_size=4, lr=1e-4,
                                                                          max_seq_length=24))
    assert stats["steps"] == 4 and stats["loss_last"] < stats["loss_first"]
    model = LoadedModel(load_sentence_transformer(tmp_path / "m"), tmp_path / "m", "candidate")
    catalog = {f"i{n}": item for n, (_, item) in enumerate(PAIRS)}
    result = evaluate_retrieval(model.encode, [c for c, _ in PAIRS], list(catalog), [1.0] * 4, catalog,
                                {i: 0.0 for i in catalog}, k=1)
    assert result.recall == 1.0 and result.ndcg == 1.0
    # Items that did not exist yet at query time are not candidates: nothing to find.
    late = evaluate_retrieval(model.encode, [PAIRS[0][0]], ["i0"], [1.0], catalog, {"i0": 5.0}, k=4)
    assert late.recall == 0.0


def test_gru_beats_frequency_on_a_sequential_pattern() -> None:
    cats = ["coffee", "fitness", "food", "spa"]
    rng = np.random.default_rng(0)
    examples = []
    for _ in range(40):  # each user cycles coffee → fitness → food → spa: frequency cannot tell
        start = int(rng.integers(4))
        seq = [cats[(start + n) % 4] for n in range(9)]
        examples += [Example(seq[:n], 9, seq[n]) for n in range(1, 9)]
    train, test = examples[:240], examples[240:]
    model = SequenceModel(cats, SequenceConfig(epochs=15, hidden=16))
    model.fit(train)
    gru = accuracy_at(model.scores(test), cats, test)
    freq = accuracy_at(FrequencyBaseline(cats, train).scores(test), cats, test)
    assert gru["acc@1"] > 0.9 > freq["acc@1"]
    assert better({"acc@1": gru["acc@1"], "acc@3": gru["acc@3"]}, {"acc@1": freq["acc@1"], "acc@3": 1.0},
                  ["acc@1", "acc@3"])
    assert not better({"acc@1": 0.5}, {"acc@1": 0.5}, ["acc@1"])
    assert not better({"acc@1": float("nan")}, {"acc@1": 0.1}, ["acc@1"])


def test_gru_round_trips(tmp_path: Path) -> None:
    model = SequenceModel(["a", "b"], SequenceConfig(epochs=1))
    model.fit([Example(["a"], 1, "b"), Example(["b"], 2, "a")])
    model.save(tmp_path)
    again = SequenceModel.load(tmp_path)
    ex = [Example(["a", "b"], 3, "a")]
    np.testing.assert_allclose(model.scores(ex), again.scores(ex))


def test_bootstrap_interval_contains_the_mean() -> None:
    values = np.array([0.0, 1.0] * 50)
    low, high = bootstrap_ci(values)
    assert low < 0.5 < high and high - low < 0.3
