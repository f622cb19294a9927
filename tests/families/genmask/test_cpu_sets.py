"""Choosing the CPU set: backend='auto' on a CPU opens the fastest set of the build's CPU timing
whose DiT keeps PyTorch's masks; anything else keeps fp32. Manifest doubles (the real build and
its timings are tested in test_export.py)."""

from __future__ import annotations

import pytest

from genmask_sdk.families.genmask.engines import FAITHFUL_MASK_IOU, choose_cpu_set, choose_precision
from genmask_sdk.runtime.hardware import cpu_model
from genmask_sdk.runtime.devices import Device


class FakeManifest:
    def __init__(self, timing, ious):
        self.data = {"cpu_timing": timing}
        self.precisions = ["fp32", "fp16", "int8", "int8-dynamic"]
        self.ious = ious

    def artifact(self, stage, precision, runtime="onnx"):
        assert stage == "dit" and runtime == "onnx"
        return {"fidelity": {"mask_iou_pooled": self.ious.get(precision)}}


def timing(cpu=None, **ms):
    return {"cpu": cpu or cpu_model(), "sets": {k.replace("_", "-"): {"p50_ms": v} for k, v in ms.items()}}


def test_fastest_faithful_set_is_chosen_and_explained():
    manifest = FakeManifest(timing(fp32=100.0, int8_dynamic=40.0), {"int8-dynamic": 0.995})
    precision, why = choose_cpu_set(manifest)
    assert precision == "int8-dynamic"
    assert "fastest faithful" in why and "40 ms" in why and "fp32 100 ms" in why and "not the one" not in why


def test_an_unfaithful_set_is_never_chosen_even_when_faster():
    manifest = FakeManifest(timing(fp32=100.0, int8_dynamic=40.0), {"int8-dynamic": FAITHFUL_MASK_IOU - 0.01})
    precision, why = choose_cpu_set(manifest)
    assert precision == "fp32" and "not faithful enough: int8-dynamic" in why


def test_a_set_without_fidelity_record_is_not_vouched_for():
    precision, _ = choose_cpu_set(FakeManifest(timing(fp32=100.0, int8_dynamic=40.0), {}))
    assert precision == "fp32"


def test_fp32_wins_when_it_is_faster():
    precision, _ = choose_cpu_set(FakeManifest(timing(fp32=30.0, int8_dynamic=40.0), {"int8-dynamic": 1.0}))
    assert precision == "fp32"


def test_no_timing_means_fp32_and_says_how_to_get_one():
    precision, why = choose_cpu_set(FakeManifest(None, {}))
    assert precision == "fp32" and "int8-dynamic" in why


def test_timings_from_another_cpu_are_used_but_flagged():
    manifest = FakeManifest(timing(cpu="Some Other CPU 9000", fp32=100.0, int8_dynamic=40.0), {"int8-dynamic": 1.0})
    precision, why = choose_cpu_set(manifest)
    assert precision == "int8-dynamic" and "not the one the sets were timed on" in why


@pytest.mark.parametrize("backend,device", [("onnxruntime", "cpu"), ("openvino", "cpu"), ("auto", "cuda")])
def test_only_auto_on_a_cpu_chooses(backend, device):
    manifest = FakeManifest(timing(fp32=100.0, int8_dynamic=40.0), {"int8-dynamic": 1.0})
    precision, why = choose_precision(manifest, backend, Device(device))
    assert precision == "fp32" and "only for backend='auto' on a CPU" in why
