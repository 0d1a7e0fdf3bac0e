"""YOLO label parsing: every malformed line is named with its code; only valid boxes are kept."""

from __future__ import annotations

import pytest

from secure_data.integrity.labels import inspect_label


def check(text: str | bytes, n_classes: int = 2):
    data = text.encode() if isinstance(text, str) else text
    meta, findings = inspect_label(data, n_classes=n_classes, tolerance=1e-5)
    return meta, [f.code for f in findings], findings


@pytest.mark.parametrize(("line", "code"), [
    ("2 0.5 0.5 0.1 0.1", "label_class_out_of_range"),
    ("-1 0.5 0.5 0.1 0.1", "label_class_out_of_range"),
    ("0 nan 0.5 0.1 0.1", "label_non_finite"),
    ("0 0.5 inf 0.1 0.1", "label_non_finite"),
    ("0 0.5 0.5 0.1", "label_missing_fields"),
    ("0 0.5 0.5 0.1 0.1 0.7", "label_extra_fields"),
    ("0 -0.1 0.5 0.1 0.1", "label_coord_out_of_range"),
    ("0 0.5 0.5 1.2 0.1", "label_coord_out_of_range"),
    ("0 0.5 0.5 0 0.1", "label_nonpositive_size"),
    ("0 0.5 0.5 0.1 0.0", "label_nonpositive_size"),
    ("0 0.05 0.5 0.2 0.1", "label_box_outside_image"),
    ("0 0.5 0.98 0.1 0.1", "label_box_outside_image"),
    ("0.5 0.5 0.5 0.1 0.1", "label_parse_error"),
    ("0 0.5 x 0.1 0.1", "label_parse_error"),
])
def test_bad_line_codes(line, code):
    meta, codes, _ = check(f"1 0.3 0.3 0.2 0.2\n{line}\n")
    assert codes == [code]
    assert meta["n_boxes"] == 1 and meta["boxes"] == [[1, 0.3, 0.3, 0.2, 0.2]]


def test_valid_label_keeps_every_box_and_tolerates_blank_lines():
    meta, codes, _ = check("0 0.5 0.5 1.0 1.0\n\n1 0.1 0.1 0.2 0.2\n")
    assert codes == [] and meta == {"boxes": [[0, 0.5, 0.5, 1.0, 1.0], [1, 0.1, 0.1, 0.2, 0.2]], "n_boxes": 2}


def test_duplicate_box_is_flagged_once_kept_once():
    meta, codes, findings = check("0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2 0.2\n0 0.5000000 0.5 0.2 0.2\n")
    assert codes == ["label_duplicate_box"] and meta["n_boxes"] == 1
    assert findings[0].detail.startswith("2 line(s): line 2")


@pytest.mark.parametrize("data", [b"", b"\n\n  \n"])
def test_empty_label(data):
    meta, codes, _ = check(data)
    assert codes == ["label_empty"] and meta["n_boxes"] == 0


def test_not_utf8():
    assert check(b"0 0.5 0.5 0.1 0.1\n\xff\xfe")[1] == ["label_not_utf8"]


def test_many_bad_lines_give_one_bounded_reason_per_code():
    _, codes, findings = check("7 0.5 0.5 0.1 0.1\n" * 10_000)
    assert codes == ["label_class_out_of_range"]
    assert findings[0].detail.startswith("10000 line(s)") and findings[0].detail.endswith("and 9995 more")
    assert len(findings[0].detail) < 400
