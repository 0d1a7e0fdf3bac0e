"""PoisoningConfig: strict keys, policy groups for DAG params, template strings converted, bad values refused."""

from __future__ import annotations

import pytest

from secure_data.poisoning.config import CHECKS, DEFAULT_ACTIONS, PoisoningConfig


def test_defaults_cover_every_check():
    config = PoisoningConfig()
    assert set(config.policies) == set(CHECKS) == set(DEFAULT_ACTIONS)
    assert config.action("duplicate_label_conflict") == "quarantine" and config.action("box_outlier") == "warn"


def test_dag_param_shapes_are_accepted():
    config = PoisoningConfig.from_dict({
        "duplicates_policy": "fail", "leakage_policy": "warn", "trigger_policy": "quarantine",
        "outlier_policy": "quarantine", "drift_policy": "None", "near_dup_radius": "6",
        "match_mirrored": "false", "trigger_alpha": "0.001", "box_misaligned_policy": "warn",
    })
    assert config.action("duplicate_label_conflict") == "fail" and config.action("split_leakage") == "warn"
    assert config.action("box_outlier") == config.action("class_confusion") == "quarantine"
    assert config.action("box_misaligned") == "warn"  # the specific key wins over its group
    assert config.action("distribution_drift") == "warn"  # "None" = not given = default
    assert config.near_dup_radius == 6 and config.match_mirrored is False and config.trigger_alpha == 0.001


@pytest.mark.parametrize("bad, match", [
    ({"near_dup_radias": 6}, "unknown poisoning config keys"),
    ({"trigger_policy": "delete"}, "must be one of"),
    ({"drift_policy": "quarantine"}, "whole set"),
    ({"near_dup_radius": "six"}, "expected int"),
    ({"policies": {"label_flip": "warn"}}, "unknown checks"),
    ({"block_px": 7}, "even"),
    ({"stats_boxes_per_image": "0"}, "stats_boxes_per_image"),
    ({"max_boxes_per_image": 0}, "max_boxes_per_image"),
])
def test_bad_configs_are_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        PoisoningConfig.from_dict(bad)


def test_round_trip_through_to_dict():
    config = PoisoningConfig.from_dict({"outlier_policy": "quarantine", "workers": 2})
    assert PoisoningConfig.from_dict(config.to_dict()) == config
