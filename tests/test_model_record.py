"""The typed model record (napari_unet.model_record): a view of the plain dict on disk."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet.model_files import list_builtin_models, load_model, model_from_dict, model_to_dict
from napari_unet.model_record import ModelRecord, update_record


@pytest.mark.parametrize("name", list_builtin_models())
def test_the_shipped_records_round_trip_exactly(name):
    record = load_model(name).record
    rec = ModelRecord.from_dict(record)
    assert rec.to_dict() == record and list(rec.to_dict()) == list(record)  # the order too
    assert rec.name == name and rec.parent is None and "parent" in rec.to_dict()  # None kept
    assert rec.postprocess == record["postprocess"] and rec.object_diameter > 0
    assert rec.extra == {} and "source" not in rec.to_dict(keep_source=False)


def test_an_old_record_with_missing_keys_reads_and_writes_back_as_it_was():
    old = {"name": "v1", "steps": 3, "postprocess": {"threshold": 0.6}}
    rec = ModelRecord.from_dict(old)
    assert rec.description is None and rec.history is None and rec.expand_labels is None
    assert rec.to_dict() == old
    assert ModelRecord.from_dict({}).to_dict() == {}
    assert ModelRecord.of(object()) == ModelRecord()  # no record at all


def test_unknown_keys_are_kept(tiny_net):
    old = {"name": "v1", "version": 7, "from_the_future": {"a": [1, 2]}, "steps": 2}
    rec = ModelRecord.from_dict(old)
    assert rec.extra == {"version": 7, "from_the_future": {"a": [1, 2]}}
    assert rec.to_dict() == old and list(rec.to_dict()) == list(old)
    tiny_net.record = dict(old)
    assert model_from_dict(model_to_dict(tiny_net)).record["from_the_future"] == {"a": [1, 2]}


@pytest.mark.parametrize("bad, words", [
    ({"steps": "many"}, "steps must be int or None, got str 'many'"),
    ({"name": 3}, "name must be str or None, got int 3"),
    ({"annotated_slices": 2}, "annotated_slices must be list"),
    ({"postprocess": [0.5]}, "postprocess must be dict"),
    ({"final_loss": True}, "final_loss must be float"),
    ({"object_diameter": "x" * 100}, "object_diameter must be float"),
    ({3: "x"}, "keys must be strings"),
])
def test_bad_types_give_one_line(bad, words):
    with pytest.raises(ValueError) as err:
        ModelRecord.from_dict(bad)
    assert words in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ValueError, match="record must be a dict"):
        ModelRecord.from_dict("name=x")


def test_numbers_of_any_kind_are_accepted_as_they_are():
    rec = ModelRecord.from_dict({"steps": np.int64(3), "final_loss": np.float32(0.5),
                                 "wall_time_s": 12, "annotated_slices": (0, 1)})
    assert rec.steps == 3 and rec.wall_time_s == 12 and rec.to_dict()["annotated_slices"] == (0, 1)


def test_new_fields_follow_the_keys_read_and_none_is_left_out_unless_asked():
    rec = ModelRecord.from_dict({"steps": 2, "name": "a"})
    rec.data = "some slices"
    assert list(rec.to_dict()) == ["steps", "name", "data"]
    fresh = ModelRecord(name="b", parent=None)
    assert fresh.to_dict() == {"name": "b"}
    assert fresh.to_dict(keep_none=["parent"]) == {"name": "b", "parent": None}
    with pytest.raises(ValueError, match="is a field"):
        ModelRecord(extra={"name": "x"})


def test_update_record_checks_names_and_types(tiny_net):
    update_record(tiny_net, name="v1", steps=4)
    update_record(tiny_net, only_missing=True, name="other", data="d")
    assert tiny_net.record == {"name": "v1", "steps": 4, "data": "d"}
    with pytest.raises(ValueError, match="no field 'nmae'"):
        update_record(tiny_net, nmae="typo")
    with pytest.raises(ValueError, match="steps must be int"):
        update_record(tiny_net, name="v2", steps="4")
    assert tiny_net.record["name"] == "v1"  # nothing set


def test_a_file_whose_record_has_a_bad_type_is_refused_in_one_line(tmp_path, tiny_net):
    import torch

    d = model_to_dict(tiny_net)
    d["record"] = {"steps": "many"}
    torch.save(d, tmp_path / "m.pt")
    with pytest.raises(ValueError, match=r"m\.pt: record: steps must be int") as err:
        load_model(tmp_path / "m.pt")
    assert "\n" not in str(err.value)
