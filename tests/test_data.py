import numpy as np
import pytest

from ferroute.evaluate.ferplus import (
    EMOTIONS,
    NO_LABEL,
    DataError,
    load_split,
    majority_label,
    vote_entropy,
)


def v(*counts):
    return np.array(counts, dtype=np.int64)


def test_majority_rule():
    assert majority_label(v(6, 1, 0, 0, 0, 0, 0, 0, 0, 0)) == 0  # single vote dropped as outlier
    assert majority_label(v(4, 0, 0, 4, 0, 0, 0, 0, 2, 0)) == NO_LABEL  # nobody over half
    assert majority_label(v(0, 0, 0, 0, 0, 0, 0, 0, 8, 2)) is None  # unknown dominates: dropped
    assert majority_label(v(2, 0, 0, 0, 0, 0, 0, 0, 0, 8)) is None  # not a face: dropped
    assert majority_label(v(1, 1, 1, 1, 1, 1, 1, 1, 1, 1)) is None  # every vote an outlier
    assert majority_label(v(0, 0, 0, 2, 0, 0, 0, 0, 0, 0)) == 3


def test_vote_entropy_in_nats():
    assert vote_entropy(v(5, 5, 0, 0, 0, 0, 0, 0))[()] == pytest.approx(np.log(2))
    assert vote_entropy(v(10, 0, 0, 0, 0, 0, 0, 0))[()] == pytest.approx(0.0)


def test_reads_layout(fake_ferplus):
    s = load_split("train", fake_ferplus)
    assert s.images.shape[1:] == (48, 48) and s.images.dtype == np.uint8
    assert s.votes.shape == (len(s), len(EMOTIONS))
    np.testing.assert_allclose(s.distributions.sum(1), 1.0)
    again = load_split("train", fake_ferplus)  # from the npz cache
    np.testing.assert_array_equal(again.images, s.images)


def test_missing_folder_names_it(tmp_path):
    with pytest.raises(DataError, match="FERPlus folder not found"):
        load_split("train", tmp_path / "nope")
    (tmp_path / "x").mkdir()
    with pytest.raises(DataError, match="FER2013Valid"):
        load_split("valid", tmp_path / "x")


def test_malformed_row_names_file_and_line(fake_ferplus):
    csv = fake_ferplus / "FER2013Test" / "label.csv"
    lines = csv.read_text().splitlines()
    lines[2] = "fer.png,(0 0 48 48),1,2"
    csv.write_text("\n".join(lines))
    with pytest.raises(DataError, match=r"label.csv:3: expected 12 fields"):
        load_split("test", fake_ferplus, cache=False)
    lines[2] = 'a.png,"(0, 0, 48, 48)",x,0,0,0,0,0,0,0,0,0'
    csv.write_text("\n".join(lines))
    with pytest.raises(DataError, match=r"label.csv:3: vote counts must be numbers"):
        load_split("test", fake_ferplus, cache=False)


def test_missing_image_names_line(fake_ferplus):
    d = fake_ferplus / "FER2013Valid"
    name = (d / "label.csv").read_text().splitlines()[4].split(",")[0]
    (d / name).unlink()
    with pytest.raises(DataError, match=rf"label.csv:5: image {name} not found"):
        load_split("valid", fake_ferplus, cache=False)


def test_no_data_dir_message(monkeypatch):
    monkeypatch.delenv("FERPLUS_DIR", raising=False)
    with pytest.raises(DataError, match="FERPLUS_DIR"):
        load_split("test")


@pytest.mark.data
def test_real_ferplus_splits(ferplus_dir):
    te = load_split("test", ferplus_dir)
    raw = (ferplus_dir / "FER2013Test" / "label.csv").read_text().splitlines()
    assert 3000 < len(te) <= len(raw)
    assert (te.labels >= 0).sum() > 3000
    assert set(np.unique(te.labels)) <= set(range(-1, 8))
    # disagreement is the vote entropy of the raw distribution
    i = 0
    p = te.votes[i] / te.votes[i].sum()
    assert te.disagreement[i] == pytest.approx(-(p[p > 0] * np.log(p[p > 0])).sum())
    assert 0 < te.disagreement.mean() < np.log(8)


def test_packed_splits_read_like_the_folders(fake_ferplus, tmp_path):
    from ferroute.evaluate.ferplus import pack_splits

    packed = pack_splits(tmp_path / "packed", fake_ferplus)
    for split in ("train", "valid", "test"):
        a, b = load_split(split, fake_ferplus), load_split(split, packed)
        np.testing.assert_array_equal(a.images, b.images)
        np.testing.assert_array_equal(a.votes, b.votes)
        np.testing.assert_array_equal(a.labels, b.labels)


def test_load_ckplus_reads_labels_and_subjects_and_names_bad_files(tmp_path):
    from PIL import Image

    from ferroute.evaluate.ferplus import DataError, load_ckplus

    (tmp_path / "images" / "anger").mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.full((48, 48), 10 * i, np.uint8)).save(tmp_path / "images" / "anger" / f"{i}.png")
    (tmp_path / "labels.csv").write_text("file,label,subject\n" + "".join(f"anger/{i}.png,anger,{i // 2}\n" for i in range(3)))
    ck = load_ckplus(tmp_path)
    assert ck.images.shape == (3, 48, 48) and list(ck.labels) == [4, 4, 4] and list(ck.groups) == ["0", "0", "1"]
    (tmp_path / "labels.csv").write_text("file,label,subject\nanger/0.png,boredom,1\n")
    with pytest.raises(DataError, match=r"labels.csv, line 2"):
        load_ckplus(tmp_path)
    with pytest.raises(DataError, match="not found"):
        load_ckplus(tmp_path / "nowhere")
