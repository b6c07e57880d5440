"""Charset, label encoders (hand-checked SMTR substrings), greedy decoding, metric values."""
import random
import string

import pytest
import torch

from openrec.config import ConfigError
from openrec.metrics import RecMetric, edit_distance, summarize_sets
from openrec.text import CTCLabelEncode, LabelRejected, SMTRLabelEncode, build_charset, ctc_greedy_decode, smtr_greedy_decode


def test_builtin_charset_is_the_94_english_symbols():
    cs = build_charset()
    assert "".join(cs.characters) == string.digits + string.ascii_lowercase + string.ascii_uppercase + string.punctuation
    assert len(cs) == 94 and cs.num_ctc_classes == 95 and cs.num_smtr_tokens == 99 and cs.num_smtr_classes == 96
    assert len(build_charset(use_space_char=True)) == 95
    with pytest.raises(ConfigError, match="not found"):
        build_charset("missing_dict.txt")


def test_ctc_encode_drops_and_counts_unknown_chars():
    cs = build_charset(max_text_length=5)
    enc = CTCLabelEncode(cs)
    out = enc("a b")
    assert out["ctc_label"].tolist() == [11, 12, 0, 0, 0] and out["ctc_length"] == 2 and out["unknown_chars"] == 1
    for text, reason in (("", "empty"), ("   ", "empty"), ("abcdef", "too_long")):
        with pytest.raises(LabelRejected) as e:
            enc(text)
        assert e.value.reason == reason
    with pytest.raises(LabelRejected, match="out_of_charset"):
        CTCLabelEncode(cs, drop_unknown=False)("é")


def _ids(cs, text):
    return [cs.index[c] + 1 for c in text]


def test_smtr_substrings_hello():
    cs = build_charset()
    enc = SMTRLabelEncode(cs, substring_noise="off")
    F, B = cs.smtr_inf, cs.smtr_inb
    h, e, l, o = _ids(cs, "helo")
    nxt, pre = enc.pairs([h, e, l, l, o])
    assert nxt == [([F] * 5, h), ([F] * 4 + [h], e), ([F] * 3 + [h, e], l), ([F, F, h, e, l], l),
                   ([F, h, e, l, l], o), ([h, e, l, l, o], 0)]
    assert pre == [([B] * 5, o), ([o] + [B] * 4, l), ([l, o, B, B, B], l), ([l, l, o, B, B], e),
                   ([e, l, l, o, B], h), ([h, e, l, l, o], 0)]
    out = enc("hello")
    assert out["smtr_next_count"] == 6 and out["smtr_next_label"][:7].tolist() == [h, e, l, l, o, 0, cs.smtr_pad]
    assert out["smtr_label"][:7].tolist() == [cs.smtr_bos, h, e, l, l, o, 0]


def test_smtr_substring_noise_modes():
    cs = build_charset()
    text = "abcdefg"
    clean_next, _ = SMTRLabelEncode(cs, substring_noise="off").pairs(_ids(cs, text))
    full = [tuple(s) for s, _ in clean_next[5:]]  # contexts with 5 real characters
    for mode in ("openocr", "append"):
        out = SMTRLabelEncode(cs, substring_noise=mode)(text, random.Random(0))
        count = int(out["smtr_next_count"])
        subs = [tuple(r) for r in out["smtr_next_subs"][:count].tolist()]
        assert count == len(clean_next) + len(full)  # one noisy copy per full context
        kept_clean = sum(s in subs[:len(clean_next)] for s in full)
        assert kept_clean == (0 if mode == "openocr" else len(full))


def test_greedy_decoders():
    cs = build_charset()
    a, b = cs.index["a"] + 1, cs.index["b"] + 1
    frames = torch.tensor([[a, a, 0, a, b, b, 0]])
    probs = torch.nn.functional.one_hot(frames, cs.num_ctc_classes).float() * 0.9
    texts, confs = ctc_greedy_decode(probs, cs)
    assert texts == ["aab"] and confs[0] == pytest.approx(0.9)
    tokens = torch.tensor([[a, cs.smtr_bos, b, 0, a]])
    texts, _ = smtr_greedy_decode(torch.nn.functional.one_hot(tokens, cs.num_smtr_classes).float(), cs)
    assert texts == ["ab"]


def test_edit_distance_and_metric_hand_computed():
    assert edit_distance("kitten", "sitting") == 3 and edit_distance("", "abc") == 3 and edit_distance("ab", "ab") == 0
    m = RecMetric()
    # normalised: "Hello!" == "hello"; "wor1d" vs "world" (1/5); "a b" == "ab"; "" vs "xyz" (3/3)
    m.update(["Hello!", "wor1d", "a b", ""], ["hello", "world", "AB", "xyz"])
    r = m.compute()
    assert r["samples"] == 4 and r["acc"] == pytest.approx(2 / 4)
    assert r["norm_edit_dis"] == pytest.approx(1 - (0 + 0.2 + 0 + 1.0) / 4)
    cs_metric = RecMetric(case_sensitive=True)
    cs_metric.update(["Hello!", "ab"], ["hello", "ab"])
    assert cs_metric.compute()["acc"] == 0.5


def test_summarize_sets():
    s = summarize_sets({"A": {"samples": 100, "acc": 0.9, "norm_edit_dis": 0.95},
                        "B": {"samples": 300, "acc": 0.5, "norm_edit_dis": 0.75}})
    assert s["combined"]["acc"] == pytest.approx(0.6) and s["average"]["acc"] == pytest.approx(0.7)
    assert s["combined"]["norm_edit_dis"] == pytest.approx(0.8) and s["combined"]["samples"] == 400


def test_metric_keeps_misreads_and_counts_first_or_last_character_faults():
    from openrec.metrics import RecMetric, edge_error_counts
    m = RecMetric()
    labels = ["COTTAGE", "BROAD", "Hello", "THE", "cat", "I", "street"]
    preds = ["COTTAG", "road", "hello!", "THC", "dog", "", "stret"]
    m.update(preds, labels)
    assert m.errors == [("COTTAGE", "COTTAG"), ("BROAD", "road"), ("THE", "THC"), ("cat", "dog"), ("I", ""),
                        ("street", "stret")]  # "hello!" normalises to the label
    # dropped: COTTAGE, BROAD; wrong at an end: THE; not edge faults: cat (all), I (one letter), street (middle)
    assert edge_error_counts(m.errors) == {"errors": 6, "dropped": 2, "wrong": 1}
    m.reset()
    assert m.errors == []
